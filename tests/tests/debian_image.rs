//! The Debian disk image that `images/debian/build.sh` makes, and the
//! hardware-host script that boots it through kilnd.
//!
//! - Slow (ignored; `scripts/test-slow.sh` runs them): build the image if it
//!   is missing, then boot it under QEMU's software emulation (TCG), once
//!   through SeaBIOS and once through OVMF, until cloud-init's final message
//!   and a login prompt appear on the serial console. TCG, not KVM: these
//!   machines' nested KVM cannot run a guest kernel (testbed.md), and the
//!   point is to prove the image itself sound (partitions, GRUB for both
//!   firmwares, kernel, initramfs, root by UUID, systemd, cloud-init).
//! - Slow (ignored) on kiln-vmm and this machine's KVM: SeaBIOS reads the
//!   image's GRUB from a qcow2 overlay over virtio-blk, and GRUB runs its
//!   menu and starts loading Linux. That far the nested KVM can run
//!   (testbed.md); the kernel itself needs a hardware host
//!   (`scripts/hardware-host.sh`).
//! - Fast: `scripts/hardware-host.sh --dry-run` prints the kilnd config and
//!   the kilnd/kiln commands a hardware host would run, and the script
//!   refuses to run on a PVM-nested KVM (unless only `--until active`) or
//!   without `/dev/kvm`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use kiln_tests::{
    cache_dir, guest_file, kiln_vmm, kvm_available, repo_root, tail_lines, ScratchDir,
};

/// How long one TCG boot may take to reach the login prompt.
const BOOT_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// The line cloud-init's last stage prints (images/debian/cloud.cfg).
const CLOUD_INIT_DONE: &str = "finished at";

/// The image, built first (as `scripts/build-debian-image.sh` would) if it
/// is not in the cache yet.
fn debian_image() -> PathBuf {
    let image = cache_dir().join("images").join("debian-12.qcow2");
    if !image.exists() {
        let start = Instant::now();
        let out = Command::new(repo_root().join("scripts/build-debian-image.sh"))
            .arg("--output")
            .arg(&image)
            .stdin(Stdio::null())
            .output()
            .expect("run scripts/build-debian-image.sh");
        assert!(
            out.status.success(),
            "building the Debian image failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!(
            "built {} in {:.0} s",
            image.display(),
            start.elapsed().as_secs_f64()
        );
    }
    assert!(image.exists(), "no image at {}", image.display());
    image
}

/// Boots `image` under QEMU TCG with `firmware_args`, on a throw-away
/// snapshot of the image, until the serial log has a login prompt and
/// cloud-init's final message. Returns the serial log and the time taken.
fn boot_tcg(image: &Path, tag: &str, firmware_args: &[String]) -> (String, Duration) {
    let dir = ScratchDir::new(tag).unwrap();
    let log = dir.path().join("serial.log");
    let start = Instant::now();
    let mut child = Command::new("qemu-system-x86_64")
        .args(["-accel", "tcg", "-M", "pc", "-m", "1024", "-smp", "2"])
        .args(["-display", "none", "-nodefaults", "-monitor", "none"])
        .args(["-nic", "none", "-no-reboot", "-serial"])
        .arg(format!("file:{}", log.display()))
        .args(firmware_args)
        .arg("-drive")
        .arg(format!(
            "file={},if=virtio,format=qcow2,snapshot=on",
            image.display()
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("qemu-system-x86_64 not found: run scripts/setup.sh");
    let serial = || String::from_utf8_lossy(&fs::read(&log).unwrap_or_default()).into_owned();
    let outcome = loop {
        let text = serial();
        if text.contains("login:") && text.contains(CLOUD_INIT_DONE) {
            break Ok(text);
        }
        if let Some(status) = child.try_wait().unwrap() {
            break Err(format!("QEMU exited ({status}) before the login prompt"));
        }
        if start.elapsed() > BOOT_TIMEOUT {
            break Err(format!(
                "no login prompt and cloud-init message within {BOOT_TIMEOUT:?}"
            ));
        }
        std::thread::sleep(Duration::from_secs(1));
    };
    let took = start.elapsed();
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    match outcome {
        Ok(text) => (text, took),
        Err(why) => panic!(
            "{tag}: {why}; QEMU stderr: {}\nserial log tail:\n{}",
            String::from_utf8_lossy(&out.stderr),
            tail_lines(&serial(), 40)
        ),
    }
}

/// What every boot of the image must show on its serial console.
fn check_common(tag: &str, serial: &str) {
    for needle in [
        "Linux version",
        "console=ttyS0",
        "root=UUID=",
        "Debian GNU/Linux 12",
        "Cloud-init v.",
        "login:",
    ] {
        assert!(
            serial.contains(needle),
            "{tag}: no {needle:?} on the serial console:\n{}",
            tail_lines(serial, 40)
        );
    }
}

#[test]
#[ignore = "slow: builds a Debian image with debootstrap and boots it under QEMU TCG; run with scripts/test-slow.sh"]
fn debian_image_boots_bios_tcg() {
    let image = debian_image();
    let bios = guest_file("bios.bin");
    let (serial, took) = boot_tcg(
        &image,
        "deb-bios",
        &["-bios".into(), bios.display().to_string()],
    );
    eprintln!(
        "BIOS (SeaBIOS) under TCG: login prompt after {:.0} s",
        took.as_secs_f64()
    );
    check_common("bios", &serial);
    // Booted through the BIOS path: the kernel found no EFI system table.
    assert!(
        !serial.contains("efi: EFI v"),
        "the BIOS boot reports EFI firmware:\n{}",
        tail_lines(&serial, 40)
    );
}

#[test]
#[ignore = "slow: builds a Debian image with debootstrap and boots it under QEMU TCG; run with scripts/test-slow.sh"]
fn debian_image_boots_uefi_tcg() {
    let image = debian_image();
    let code = guest_file("OVMF_CODE.fd");
    let vars = guest_file("OVMF_VARS.fd");
    let dir = ScratchDir::new("deb-vars").unwrap();
    let vars_copy = dir.path().join("OVMF_VARS.fd");
    fs::copy(&vars, &vars_copy).unwrap();
    let (serial, took) = boot_tcg(
        &image,
        "deb-uefi",
        &[
            "-drive".into(),
            format!("if=pflash,format=raw,readonly=on,file={}", code.display()),
            "-drive".into(),
            format!("if=pflash,format=raw,file={}", vars_copy.display()),
        ],
    );
    eprintln!(
        "UEFI (OVMF) under TCG: login prompt after {:.0} s",
        took.as_secs_f64()
    );
    check_common("uefi", &serial);
    assert!(
        serial.contains("efi: EFI v"),
        "the UEFI boot shows no EFI system table in the kernel log:\n{}",
        tail_lines(&serial, 40)
    );
}

#[test]
#[ignore = "slow: builds a Debian image with debootstrap and boots its GRUB on kiln-vmm; run with scripts/test-slow.sh"]
fn debian_image_grub_on_kiln_vmm_seabios() {
    if !kvm_available("debian_image_grub_on_kiln_vmm_seabios") {
        return;
    }
    let image = debian_image();
    let dir = ScratchDir::new("deb-kiln").unwrap();
    let overlay = dir.path().join("overlay.qcow2");
    let made = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b"])
        .arg(&image)
        .arg(&overlay)
        .status()
        .expect("qemu-img not found: run scripts/setup.sh");
    assert!(made.success(), "qemu-img create failed: {made}");
    let log = dir.path().join("serial.log");
    let start = Instant::now();
    let mut child = Command::new(kiln_vmm())
        .arg("--firmware")
        .arg(cache_dir().join("guest").join("bios.bin"))
        .arg("--disk")
        // The overlay's backing file, named (kiln-vmm follows no header).
        .arg(format!(
            "path={},format=qcow2,backing={},backing_format=qcow2",
            overlay.display(),
            image.display()
        ))
        .args(["--cpus", "1", "--memory", "1G", "--serial-log"])
        .arg(&log)
        .arg("--api-socket")
        .arg(dir.path().join("api.sock"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start kiln-vmm");
    let serial = || String::from_utf8_lossy(&fs::read(&log).unwrap_or_default()).into_owned();
    let timeout = Duration::from_secs(600);
    let outcome = loop {
        if serial().contains("Booting `") {
            break Ok(());
        }
        if let Some(status) = child.try_wait().unwrap() {
            break Err(format!(
                "kiln-vmm exited ({status}) before GRUB booted an entry"
            ));
        }
        if start.elapsed() > timeout {
            break Err(format!("GRUB booted no entry within {timeout:?}"));
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let took = start.elapsed();
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    let text = serial();
    if let Err(why) = outcome {
        panic!(
            "{why}\nserial log tail:\n{}\nkiln-vmm log tail:\n{}",
            tail_lines(&text, 20),
            tail_lines(&String::from_utf8_lossy(&out.stderr), 20)
        );
    }
    eprintln!(
        "kiln-vmm + SeaBIOS: GRUB booting Linux after {:.0} s",
        took.as_secs_f64()
    );
    // Every stage in order: firmware, GRUB's boot sector and core image
    // (from the BIOS boot partition), GRUB's normal mode and menu.
    let mut at = 0;
    for needle in [
        "SeaBIOS",
        "Booting from Hard Disk",
        "GRUB loading.",
        "Welcome to GRUB!",
        "will be executed automatically",
        "Booting `",
    ] {
        match text[at..].find(needle) {
            Some(i) => at += i + needle.len(),
            None => panic!(
                "no {needle:?} after the earlier stages:\n{}",
                tail_lines(&text, 20)
            ),
        }
    }
}

/// Runs scripts/hardware-host.sh with `args` and the KVM-check paths set.
fn hardware_host(args: &[&str], kvm_dev: &Path, pvm_module: &Path) -> Output {
    Command::new(repo_root().join("scripts/hardware-host.sh"))
        .args(args)
        .env("KILN_CACHE", cache_dir())
        .env("KILN_KVM_DEVICE", kvm_dev)
        .env("KILN_PVM_MODULE", pvm_module)
        .stdin(Stdio::null())
        .output()
        .expect("run scripts/hardware-host.sh")
}

/// The value that follows `flag` in `words`, if any.
fn flag_value<'a>(words: &[&'a str], flag: &str) -> Option<&'a str> {
    let i = words.iter().position(|w| *w == flag)?;
    words.get(i + 1).copied()
}

#[test]
fn hardware_host_dry_run_prints_the_kilnd_commands() {
    let dir = ScratchDir::new("hwdry").unwrap();
    let debian = dir.path().join("debian.qcow2");
    let windows = dir.path().join("windows.raw");
    let qemu_img = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&debian)
        .arg("64M")
        .status()
        .expect("qemu-img not found: run scripts/setup.sh");
    assert!(qemu_img.success());
    fs::write(&windows, vec![0u8; 1 << 20]).unwrap();
    let bin = dir.path().join("bin");
    let work = dir.path().join("work");
    let s = |p: &Path| p.display().to_string();
    let (debian_s, windows_s, bin_s, work_s) = (s(&debian), s(&windows), s(&bin), s(&work));
    let out = hardware_host(
        &[
            "--dry-run",
            "--debian",
            &debian_s,
            "--windows",
            &windows_s,
            "--windows-format",
            "raw",
            "--bin",
            &bin_s,
            "--workdir",
            &work_s,
            "--cpus",
            "2",
            "--memory",
            "2G",
        ],
        Path::new("/dev/kvm"),
        Path::new("/sys/module/kvm_pvm"),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "--dry-run failed ({}): {}{}",
        out.status,
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
    // The kilnd config, as comments: the fetched firmware and kiln-vmm.
    let guest = cache_dir().join("guest");
    let config: Vec<&str> = stdout.lines().filter(|l| l.starts_with('#')).collect();
    for want in [
        format!("# bios = \"{}\"", s(&guest.join("bios.bin"))),
        format!("# uefi_code = \"{}\"", s(&guest.join("OVMF_CODE.fd"))),
        format!(
            "# uefi_vars_template = \"{}\"",
            s(&guest.join("OVMF_VARS.fd"))
        ),
        format!("# binary = \"{bin_s}/kiln-vmm\""),
        // Windows 11 24H2 and Server 2025 need SSE4.2 and POPCNT: kept.
        "# cpu_template = \"x86-64-v2\"".to_string(),
        // The images' directory, allowed for imports by path.
        format!(
            "# import_dirs = [\"{}\"]",
            s(debian.canonicalize().unwrap().parent().unwrap())
        ),
    ] {
        assert!(config.contains(&want.as_str()), "{want} not in\n{stdout}");
    }
    let lines: Vec<&str> = stdout.lines().filter(|l| !l.starts_with('#')).collect();
    // kilnd, the flavor, the network, the key pair, then image + server
    // for Debian/BIOS, Debian/UEFI and Windows.
    assert_eq!(lines.len(), 10, "{stdout}");
    let words = |l: &str| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>();
    let kilnd = words(lines[0]);
    assert_eq!(kilnd[0], format!("{bin_s}/kilnd"));
    assert_eq!(
        flag_value(
            &kilnd.iter().map(String::as_str).collect::<Vec<_>>(),
            "--state-dir"
        ),
        Some(format!("{work_s}/state").as_str())
    );
    let kiln = format!("{bin_s}/kiln --socket {work_s}/kiln.sock");
    assert_eq!(
        lines[1],
        format!("{kiln} flavor create hw.vm --vcpus 2 --ram-mb 2048 --disk-gb 0")
    );
    assert_eq!(
        lines[2],
        format!("{kiln} network create hwnet --cidr 10.251.0.0/24 --mode nat")
    );
    assert_eq!(
        lines[3],
        format!("{kiln} keypair create hw --private-key-file {work_s}/hw_key")
    );
    let debian_real = s(&debian.canonicalize().unwrap());
    // BIOS: metadata service and DHCP; UEFI: a config drive. Each with the
    // VGA display, whose screen the script saves through VNC.
    for (i, fw, drive) in [(4, "bios", ""), (6, "uefi", " --config-drive")] {
        assert_eq!(
            lines[i],
            format!(
                "{kiln} image create debian-{fw} --path {debian_real} --format qcow2 --firmware {fw}"
            )
        );
        assert_eq!(
            lines[i + 1],
            format!(
                "{kiln} server create debian-{fw} --flavor hw.vm --image debian-{fw} --network hwnet \
                 --display vga --key-name hw --user-data {work_s}/user-data{drive} --wait ready --timeout 900 \
                 --ready-console login:"
            )
        );
    }
    let windows_real = s(&windows.canonicalize().unwrap());
    assert_eq!(
        lines[8],
        format!(
            "{kiln} image create windows --path {windows_real} --format raw --firmware uefi \
             --os-type windows"
        )
    );
    assert!(
        lines[9].ends_with(
            "--network hwnet --display vga --wait ready --timeout 900 \
             --ready-console 'SAC>|Computer is booting, SAC started'"
        ),
        "{}",
        lines[9]
    );

    // One firmware on request, and only up to ACTIVE (no readiness regex).
    let out = hardware_host(
        &[
            "--dry-run",
            "--debian",
            &debian_s,
            "--firmware",
            "uefi",
            "--until",
            "active",
            "--bin",
            &bin_s,
            "--workdir",
            &work_s,
        ],
        Path::new("/dev/kvm"),
        Path::new("/sys/module/kvm_pvm"),
    );
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(lines.len(), 6, "{stdout}");
    assert!(lines[4].ends_with("--firmware uefi"), "{}", lines[4]);
    assert!(
        lines[5].ends_with("--config-drive --wait active --timeout 900"),
        "{}",
        lines[5]
    );
    assert!(
        !work.exists(),
        "--dry-run must not create the work directory"
    );
}

/// An ISO 9660 image made by genisoimage (setup.sh installs it) in `dir`.
fn plain_iso(dir: &Path, name: &str) -> PathBuf {
    let src = dir.join(format!("{name}.d"));
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("README.TXT"), name).unwrap();
    let iso = dir.join(format!("{name}.iso"));
    let st = Command::new("genisoimage")
        .args(["-quiet", "-o"])
        .arg(&iso)
        .arg(&src)
        .status()
        .expect("genisoimage not found: run scripts/setup.sh");
    assert!(st.success());
    iso
}

#[test]
fn hardware_host_windows_install_dry_run_and_answer_file() {
    let dir = ScratchDir::new("hwwin").unwrap();
    let debian = dir.path().join("debian.qcow2");
    fs::write(&debian, b"not read in a dry run").unwrap();
    let isos = dir.path().join("isos");
    fs::create_dir(&isos).unwrap();
    let win = plain_iso(&isos, "win11");
    let virtio = plain_iso(&isos, "virtio-win");
    let s = |p: &Path| p.display().to_string();
    let (debian_s, win_s, virtio_s) = (s(&debian), s(&win), s(&virtio));
    let work_s = s(&dir.path().join("work"));
    let out = hardware_host(
        &[
            "--dry-run",
            "--debian",
            &debian_s,
            "--firmware",
            "bios",
            "--windows-iso",
            &win_s,
            "--virtio-win",
            &virtio_s,
            "--bin",
            "/opt/kiln",
            "--workdir",
            &work_s,
            "--memory",
            "2G",
        ],
        Path::new("/dev/kvm"),
        Path::new("/sys/module/kvm_pvm"),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // kilnd may import from the ISOs' directory too.
    let isos_real = s(&isos.canonicalize().unwrap());
    assert!(stdout.contains(&format!("\"{isos_real}\"")), "{stdout}");
    let lines: Vec<&str> = stdout.lines().filter(|l| !l.starts_with('#')).collect();
    // kilnd, flavor, network, key pair, Debian/BIOS, then the install.
    assert_eq!(lines.len(), 10, "{stdout}");
    let kiln = format!("/opt/kiln/kiln --socket {work_s}/kiln.sock");
    let real = |p: &Path| s(&p.canonicalize().unwrap());
    assert_eq!(
        lines[6..],
        [
            format!(
                "{kiln} image create win-iso --path {} --format iso --firmware uefi --os-type windows",
                real(&win)
            ),
            format!("{kiln} image create virtio-win --path {} --format iso", real(&virtio)),
            // Windows 11's minimum RAM, whatever --memory says.
            format!("{kiln} flavor create hw.win --vcpus 2 --ram-mb 4096 --disk-gb 64"),
            format!(
                "{kiln} server create win-install --flavor hw.win --image win-iso --cdrom virtio-win \
                 --answer-file --user-data {work_s}/autounattend.xml --disk-bus sata --network hwnet \
                 --wait active --timeout 120"
            ),
        ]
    );

    // The answer file: well-formed XML that installs the edition asked
    // for, loads the matching virtio-win drivers, turns on SAC and turns
    // off automatic repair, and installs the guest agent.
    let out = hardware_host(
        &[
            "--print-answer-file",
            "--windows-edition",
            "Windows Server 2025 Datacenter",
            "--windows-key",
            "AAAAA-BBBBB-CCCCC-DDDDD-EEEEE",
        ],
        Path::new("/dev/kvm"),
        Path::new("/sys/module/kvm_pvm"),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let xml_path = dir.path().join("autounattend.xml");
    fs::write(&xml_path, &out.stdout).unwrap();
    let parsed = Command::new("python3")
        .args([
            "-c",
            "import sys, xml.dom.minidom as m; d = m.parse(sys.argv[1]); \
                print(len(d.getElementsByTagName('settings')), \
                d.getElementsByTagName('Value')[0].firstChild.data)",
        ])
        .arg(&xml_path)
        .output()
        .unwrap();
    assert!(
        parsed.status.success(),
        "{}",
        String::from_utf8_lossy(&parsed.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&parsed.stdout).trim(),
        "3 Windows Server 2025 Datacenter"
    );
    let xml = String::from_utf8_lossy(&out.stdout);
    for want in [
        "<Key>AAAAA-BBBBB-CCCCC-DDDDD-EEEEE</Key>",
        r"D:\viostor\2k25\amd64",
        "bcdedit /ems {default} on",
        "EMSPORT:1 EMSBAUDRATE:115200",
        "recoveryenabled no",
        r"guest-agent\qemu-ga-x86_64.msi",
        "<WillWipeDisk>true</WillWipeDisk>",
    ] {
        assert!(
            xml.contains(want),
            "{want:?} not in the answer file:\n{xml}"
        );
    }
}

#[test]
fn hardware_host_rejects_bad_arguments_and_missing_images() {
    let dir = ScratchDir::new("hwbad").unwrap();
    let kvm = Path::new("/dev/kvm");
    let pvm = Path::new("/sys/module/kvm_pvm");
    let missing = dir.path().join("missing.qcow2");
    let missing_s = missing.display().to_string();
    let not_iso = dir.path().join("not.iso");
    fs::write(&not_iso, vec![0u8; 64 << 10]).unwrap();
    let not_iso_s = not_iso.display().to_string();
    let cases: [(&[&str], &str); 9] = [
        (
            &["--dry-run", "--debian", &missing_s],
            "scripts/build-debian-image.sh",
        ),
        (
            &["--dry-run", "--firmware", "coreboot"],
            "--firmware must be bios or uefi",
        ),
        (
            &["--dry-run", "--memory", "lots"],
            "--memory must be a size",
        ),
        (
            &["--dry-run", "--frobnicate"],
            "unknown argument: --frobnicate",
        ),
        (
            &["--dry-run", "--windows-iso", &not_iso_s],
            "--windows-iso and --virtio-win go together",
        ),
        (
            &[
                "--dry-run",
                "--windows-iso",
                &not_iso_s,
                "--virtio-win",
                &not_iso_s,
            ],
            "is not an ISO 9660 image",
        ),
        (
            &["--dry-run", "--windows-disk-bus", "ide"],
            "--windows-disk-bus must be sata or virtio",
        ),
        (
            &["--dry-run", "--cpu-template", "pentium"],
            "--cpu-template must be host or x86-64-v2",
        ),
        (
            &["--dry-run", "--windows-key", "x'; rm -rf /"],
            "--windows-key must look like",
        ),
    ];
    for (args, want) in cases {
        let out = hardware_host(args, kvm, pvm);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(want), "{args:?}: {stderr:?} lacks {want:?}");
    }
}

#[test]
fn hardware_host_refuses_nested_pvm_and_missing_kvm() {
    let dir = ScratchDir::new("hwkvm").unwrap();
    let present = dir.path().join("kvm_pvm");
    fs::create_dir(&present).unwrap();
    let absent = dir.path().join("absent");

    let out = hardware_host(&[], Path::new("/dev/kvm"), &present);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("refusing to run") && stderr.contains("nested through PVM"),
        "{stderr}"
    );

    let out = hardware_host(&[], &absent, &absent);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("refusing to run") && stderr.contains("is missing"),
        "{stderr}"
    );

    // The real host check, as it stands on this machine: Kiln's development
    // machines are PVM-nested and must be refused.
    if Path::new("/sys/module/kvm_pvm").exists() {
        let out = hardware_host(&[], Path::new("/dev/kvm"), Path::new("/sys/module/kvm_pvm"));
        assert_eq!(out.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&out.stderr).contains("nested through PVM"));
    }
}
