//! Firmware boot through kilnd, with real kilnd and real kiln-vmm on KVM:
//!
//! - A disk image holding the MBR probe (images/mbr/poweroff.s), registered
//!   with `firmware: bios`: its server boots Debian's SeaBIOS, which finds
//!   the root disk (the qcow2 overlay) as the first virtio-blk disk and runs
//!   the boot sector; it prints on the console and powers off through ACPI,
//!   so the server goes SHUTOFF; a start boots it again.
//! - `firmware: uefi`: each server gets `nvram.fd`, a copy of the
//!   configured OVMF_VARS template, kept across stop/start and kilnd
//!   restarts, deleted with the server; a leftover one without a server is
//!   removed by reconcile. On these nested-KVM machines OVMF stops in its
//!   SEC phase on an instruction KVM's emulator lacks (testbed.md), so the
//!   server goes ERROR with a fault naming the emulation failure; on a host
//!   with hardware virtualization OVMF runs on (hardware-host.sh boots the
//!   Debian image through it).
//! - A disk without a boot sector: SeaBIOS says so and waits, so the
//!   server stays ACTIVE; a console readiness condition sees SeaBIOS's
//!   message; a kill -9 of kilnd re-adopts the firmware's VMM.
//! - `os_type: windows` on the image: kiln-vmm gets the Hyper-V
//!   enlightenments and a local-time RTC; where KVM cannot emulate Hyper-V
//!   (these machines) the server goes ERROR saying so, elsewhere it boots.
//! - SMBIOS: a BIOS server's SeaBIOS installs the tables kilnd asked for
//!   (the SMBIOS probe, images/mbr/smbios.s, prints the type 1 UUID): the
//!   server id as UUID and serial, OpenStack's manufacturer and product.
//! - A missing firmware file refuses the create with 409 naming the file
//!   and its config key; one that goes missing later puts the server in
//!   ERROR at its next start, with the same message as its fault.

mod common;

use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use common::firmware::{fw_flavor, import_disk_fw, start_fw_kilnd};
use common::vm::{action, assert_nothing_left, console};
use common::Kilnd;
use kiln_api::compute::{Firmware, Server, ServerStatus};
use kiln_api::vm::VmConfig;
use kiln_tests::disk::{mbr_disk, smbios_probe_disk, smbios_uuid_hex};
use kiln_tests::guest_file;

/// SeaBIOS takes a few seconds here; much more under load.
const BOOT: Duration = Duration::from_secs(180);

const MBR_LINE: &str = "kiln MBR booted from virtio-blk";

/// A kilnd with the firmware files and the `fw.small` flavor; None (the
/// reason printed) where there is no KVM.
fn fw_kilnd(test: &str) -> Option<Kilnd> {
    if !std::path::Path::new("/dev/kvm").exists() {
        eprintln!("{test}: skipped: /dev/kvm is missing (needs KVM)");
        return None;
    }
    Some(start_fw_kilnd())
}

fn create_from(k: &Kilnd, name: &str, image: &str, firmware: Option<&str>) -> Server {
    let fw = firmware
        .map(|f| format!(r#","firmware":"{f}""#))
        .unwrap_or_default();
    k.create_server(&format!(
        r#"{{"name":"{name}","flavor":"fw.small","image":"{image}"{fw}}}"#
    ))
}

fn vm_json(k: &Kilnd, id: &str) -> VmConfig {
    let b = std::fs::read(k.state_path(&format!("servers/{id}/vm.json"))).unwrap();
    serde_json::from_slice(&b).unwrap()
}

#[test]
fn disk_image_boots_through_seabios_from_its_root_disk() {
    let Some(k) = fw_kilnd("disk_image_boots_through_seabios_from_its_root_disk") else {
        return;
    };
    let disk = mbr_disk(k.dir.path());
    let img = import_disk_fw(&k, "mbr", &disk, "raw", Some("bios"));
    assert!(
        matches!(
            img.kind,
            kiln_api::compute::ImageKind::Disk {
                firmware: Firmware::Bios,
                ..
            }
        ),
        "{img:?}"
    );
    let s = create_from(&k, "sb", "mbr", None);
    assert_eq!(s.firmware, Some(Firmware::Bios), "the image's firmware");
    assert_eq!(s.nvram, None, "no NVRAM for BIOS");
    assert_eq!(s.disk_image_id.as_deref(), Some(img.id.as_str()));

    // The boot sector prints and powers the VM off: SHUTOFF.
    let done = k.wait_status(&s.id, ServerStatus::Shutoff, BOOT);
    assert!(done.fault.is_none(), "{done:?}");
    let out = console(&k, &s.id);
    assert!(out.contains("SeaBIOS (version"), "{out}");
    assert_eq!(out.matches(MBR_LINE).count(), 1, "{out}");

    // What kilnd gave kiln-vmm: the firmware, no kernel, the overlay first.
    let cfg = vm_json(&k, &s.id);
    assert!(cfg.kernel.is_none());
    let fw = cfg.firmware.expect("firmware in vm.json");
    assert_eq!(fw.path, guest_file("bios.bin").display().to_string());
    assert_eq!(fw.vars, None);
    let root = k.state_path(&format!("servers/{}/root.qcow2", s.id));
    assert_eq!(cfg.disks[0].path, root.display().to_string());
    assert_eq!(cfg.disks[0].format, kiln_api::vm::DiskFormat::Qcow2);
    // Its one backing file, named: the image in the store.
    let (base, _, _) = common::disk_of(&img);
    assert_eq!(
        cfg.disks[0].backing,
        vec![kiln_api::vm::BackingConfig {
            path: base.to_owned(),
            format: kiln_api::vm::DiskFormat::Raw
        }]
    );
    // The overlay has the flavor's size over the image.
    let d = kiln_block::open_disk_chain(
        &root,
        kiln_block::DiskFormat::Qcow2,
        kiln_block::OpenOptions::default(),
        &[kiln_block::BackingFile {
            path: base.into(),
            format: kiln_block::DiskFormat::Raw,
        }],
    )
    .unwrap();
    assert_eq!(d.size(), 1 << 30);

    // Start again: a second boot through the firmware.
    action(&k, &s.id, r#"{"action":"start"}"#);
    k.wait_status(&s.id, ServerStatus::Shutoff, BOOT);
    common::vm::wait_until("the second boot's line", BOOT, || {
        console(&k, &s.id).matches(MBR_LINE).count() == 2
    });

    k.delete_server(&s.id);
    assert_nothing_left(&k);
}

#[test]
fn bios_servers_carry_their_id_in_smbios() {
    let Some(k) = fw_kilnd("bios_servers_carry_their_id_in_smbios") else {
        return;
    };
    let disk = smbios_probe_disk(k.dir.path());
    import_disk_fw(&k, "smbios", &disk, "raw", Some("bios"));
    let s = create_from(&k, "dmi", "smbios", None);
    let done = k.wait_status(&s.id, ServerStatus::Shutoff, BOOT);
    assert!(done.fault.is_none(), "{done:?}");
    let smbios = vm_json(&k, &s.id).smbios.expect("smbios in vm.json");
    assert_eq!(smbios.uuid.as_deref(), Some(s.id.as_str()));
    assert_eq!(smbios.serial.as_deref(), Some(s.id.as_str()));
    assert_eq!(smbios.manufacturer.as_deref(), Some("OpenStack Foundation"));
    assert_eq!(smbios.product.as_deref(), Some("OpenStack Nova"));
    let out = console(&k, &s.id);
    let want = format!("SMBIOS SM3 UUID {}", smbios_uuid_hex(&s.id));
    assert!(out.contains(&want), "{want:?} missing:\n{out}");
    k.delete_server(&s.id);
    assert_nothing_left(&k);
}

#[test]
fn uefi_servers_keep_their_own_nvram() {
    let Some(mut k) = fw_kilnd("uefi_servers_keep_their_own_nvram") else {
        return;
    };
    let disk = mbr_disk(k.dir.path());
    // Registered as BIOS; the server asks for UEFI.
    import_disk_fw(&k, "mbr", &disk, "raw", None);
    let s = create_from(&k, "efi", "mbr", Some("uefi"));
    assert_eq!(s.firmware, Some(Firmware::Uefi));
    let nvram = k.state_path(&format!("servers/{}/nvram.fd", s.id));
    assert_eq!(s.nvram.as_deref(), Some(nvram.to_str().unwrap()));
    let template = std::fs::read(guest_file("OVMF_VARS.fd")).unwrap();

    // What happens here: OVMF stops early in SEC on an instruction KVM's
    // emulator lacks, kiln-vmm exits with its emulation-failure code, and
    // kilnd puts the server in ERROR saying so.
    let s = k.wait_status(&s.id, ServerStatus::Error, BOOT);
    let fault = s.fault.expect("a fault").message;
    assert!(
        fault.contains("exited with code 12 (KVM emulation failure)"),
        "{fault}"
    );
    // Where: in the firmware's code, just below 4 GiB (SEC runs in place
    // from flash).
    let rip = fault
        .split("vCPU 0 stopped at rip=0x")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|h| u64::from_str_radix(h, 16).ok())
        .unwrap_or_else(|| panic!("no rip in {fault}"));
    assert!((0xff00_0000..1 << 32).contains(&rip), "{fault}");
    let cfg = vm_json(&k, &s.id);
    let fw = cfg.firmware.expect("firmware in vm.json");
    assert_eq!(fw.path, guest_file("OVMF_CODE.fd").display().to_string());
    assert_eq!(fw.vars.as_deref(), Some(nvram.to_str().unwrap()));
    assert!(cfg.kernel.is_none());
    assert_eq!(
        std::fs::read(&nvram).unwrap(),
        template,
        "a copy of the template"
    );
    let inode = std::fs::metadata(&nvram).unwrap().ino();

    // Stop and start, and a hard reboot: the same file (not a new copy) is
    // used again.
    action(&k, &s.id, r#"{"action":"stop"}"#);
    k.wait_status(&s.id, ServerStatus::Shutoff, BOOT);
    action(&k, &s.id, r#"{"action":"start"}"#);
    k.wait_status(&s.id, ServerStatus::Error, BOOT);
    action(&k, &s.id, r#"{"action":"reboot","type":"hard"}"#);
    let vmm_log = k.state_path(&format!("servers/{}/vmm.log", s.id));
    common::vm::wait_until("the third boot's emulation failure", BOOT, || {
        let log = std::fs::read_to_string(&vmm_log).unwrap_or_default();
        log.matches("exit status 12").count() == 3
    });
    k.wait_status(&s.id, ServerStatus::Error, BOOT);
    assert_eq!(std::fs::metadata(&nvram).unwrap().ino(), inode);
    assert_eq!(std::fs::read(&nvram).unwrap(), template);
    assert_eq!(vm_json(&k, &s.id).firmware.unwrap().vars, s.nvram);

    // A kilnd restart keeps it; a leftover NVRAM of a server that does not
    // exist is removed with its directory.
    let orphan = k.state_path("servers/00000000-0000-4000-8000-000000000000");
    std::fs::create_dir_all(&orphan).unwrap();
    std::fs::write(orphan.join("nvram.fd"), &template).unwrap();
    std::fs::write(orphan.join("nvram.fd.partial"), b"half").unwrap();
    k.stop();
    k.spawn();
    assert!(!orphan.exists(), "leftover NVRAM kept");
    assert_eq!(std::fs::metadata(&nvram).unwrap().ino(), inode);
    let shown = k.server(&s.id);
    assert_eq!(shown.nvram.as_deref(), Some(nvram.to_str().unwrap()));

    // Delete: the NVRAM goes with the server.
    k.delete_server(&s.id);
    assert!(!nvram.exists());
    assert_nothing_left(&k);
}

#[test]
fn firmware_server_is_ready_by_console_and_readopted() {
    let Some(mut k) = fw_kilnd("firmware_server_is_ready_by_console_and_readopted") else {
        return;
    };
    let blank = k.dir.path().join("blank.raw");
    std::fs::write(&blank, vec![0u8; 8 << 20]).unwrap();
    import_disk_fw(&k, "blank", &blank, "raw", None);
    let s = k.create_server(
        r#"{"name":"nb","flavor":"fw.small","image":"blank","ready":{"console":"No bootable device"}}"#,
    );
    common::vm::wait_until("ready", BOOT, || k.server(&s.id).ready);
    let before = k.server(&s.id);
    assert_eq!(before.status, ServerStatus::Active);
    assert!(before.ready_after_ms.is_some());
    let out = console(&k, &s.id);
    assert!(out.contains("Boot failed: not a bootable disk"), "{out}");

    // kill -9 kilnd: the firmware keeps running and is re-adopted.
    k.kill9();
    let pid = before.pid.unwrap();
    assert!(common::alive(pid));
    k.spawn();
    let after = k.server(&s.id);
    assert_eq!((after.status, after.pid), (ServerStatus::Active, Some(pid)));
    assert_eq!(common::vm::vm_info(&k, &s.id).pid, pid);
    // SeaBIOS ignores the power button: stop ends it after the timeout.
    action(&k, &s.id, r#"{"action":"stop"}"#);
    k.wait_status(&s.id, ServerStatus::Shutoff, BOOT);
    assert!(!common::alive(pid));
    k.delete_server(&s.id);
    assert_nothing_left(&k);
}

#[test]
fn windows_images_get_hyperv_and_local_time() {
    let Some(k) = fw_kilnd("windows_images_get_hyperv_and_local_time") else {
        return;
    };
    let disk = mbr_disk(k.dir.path());
    k.import_disk_with("win", &disk, "raw", r#","os_type":"windows""#);
    assert_eq!(k.json("GET", "/v1/images/win", None)["os_type"], "windows");
    let s = create_from(&k, "w", "win", None);
    let end = |st: ServerStatus| matches!(st, ServerStatus::Shutoff | ServerStatus::Error);
    common::vm::wait_until("the boot's end", BOOT, || {
        let s = k.server(&s.id);
        end(s.status) && s.task_state.is_none()
    });
    let cfg = vm_json(&k, &s.id);
    assert!(cfg.hyperv && cfg.rtc_local_time, "{cfg:?}");
    let s = k.server(&s.id);
    match s.status {
        // This host's KVM has no Hyper-V emulation (KVM_CAP_HYPERV_CPUID).
        ServerStatus::Error => {
            let fault = s.fault.unwrap().message;
            assert!(fault.contains("Hyper-V"), "{fault}");
        }
        _ => assert!(console(&k, &s.id).contains(MBR_LINE)),
    }
    // A Linux image's servers get neither.
    import_disk_fw(&k, "lin", &disk, "raw", None);
    let l = create_from(&k, "l", "lin", None);
    k.wait_status(&l.id, ServerStatus::Shutoff, BOOT);
    let cfg = vm_json(&k, &l.id);
    assert!(!cfg.hyperv && !cfg.rtc_local_time, "{cfg:?}");
}

#[test]
fn missing_firmware_file_refuses_the_create() {
    // Refused before any VMM runs; no KVM needed.
    let missing = "/nonexistent/kiln/OVMF_CODE.fd";
    let k = Kilnd::start(&format!(
        "{}[firmware]\nbios = \"{}\"\nuefi_code = \"{missing}\"\n",
        common::api::NO_VMM,
        guest_file("bios.bin").display()
    ));
    fw_flavor(&k);
    let disk = mbr_disk(k.dir.path());
    import_disk_fw(&k, "mbr", &disk, "raw", Some("uefi"));
    let r = k.req(
        "POST",
        "/v1/servers",
        Some(r#"{"name":"s","flavor":"fw.small","image":"mbr"}"#),
    );
    assert_eq!(r.status, 409, "{}", r.text());
    let err = r.text();
    assert!(
        err.contains(missing) && err.contains("firmware.uefi_code"),
        "{err}"
    );
    let list = k.json("GET", "/v1/servers", None);
    assert_eq!(list["servers"].as_array().unwrap().len(), 0);
    // The same image with BIOS, whose file is there, is accepted.
    let s = k.create_server(r#"{"name":"s","flavor":"fw.small","image":"mbr","firmware":"bios"}"#);
    // No kiln-vmm in this kilnd: ERROR at boot.
    k.wait_status(&s.id, ServerStatus::Error, BOOT);

    // The BIOS file goes missing: the next start says so.
    let mut k = k;
    k.stop();
    std::fs::write(
        &k.config,
        format!(
            "{}[firmware]\nbios = \"/nonexistent/kiln/bios.bin\"\n",
            common::api::NO_VMM
        ),
    )
    .unwrap();
    k.spawn();
    action(&k, &s.id, r#"{"action":"start"}"#);
    common::vm::wait_until("the start's fault", BOOT, || {
        let s = k.server(&s.id);
        s.task_state.is_none()
            && s.fault
                .is_some_and(|f| f.message.contains("/nonexistent/kiln/bios.bin"))
    });
    let fault = k.server(&s.id).fault.unwrap().message;
    assert!(
        fault.contains("firmware.bios") && fault.contains("missing"),
        "{fault}"
    );
}
