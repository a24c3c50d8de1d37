//! Installation media through kilnd, on a real kilnd and kiln-vmm: ISO
//! images (`format: iso`, checked to be ISO 9660 at import), a server
//! created from one (a blank qcow2 root disk of its flavor's size, the ISO
//! on the first CD-ROM, which SeaBIOS boots through kiln-vmm's AHCI
//! controller), more ISOs on further CD-ROMs (`cdroms`), the
//! answer-file ISO that carries the user data as `autounattend.xml`, the
//! root disk's bus (`sata` by default for a Windows ISO), and every
//! refusal: a file that is not ISO 9660, a flavor without a disk, a CD-ROM
//! that is not an ISO, an answer file without user data, more media than
//! the AHCI controller's ports, deleting an ISO a server uses.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use base64ct::Encoding;
use common::firmware::start_fw_kilnd;
use common::{qemu_img_info, Kilnd};
use kiln_api::compute::{DiskBus, ImageFormat, ImageKind, Server, ServerStatus};
use kiln_api::vm::VmConfig;

/// SeaBIOS takes a few seconds here; much more under load.
const BOOT: std::time::Duration = std::time::Duration::from_secs(180);

/// An ISO 9660 image `dir/name` (genisoimage, as kilnd's own ISOs) with
/// one file.
fn iso(dir: &Path, name: &str, label: &str) -> PathBuf {
    let tree = dir.join(format!("{name}.tree"));
    std::fs::create_dir_all(&tree).unwrap();
    std::fs::write(tree.join("readme.txt"), format!("{label}\n")).unwrap();
    let out = dir.join(name);
    let st = Command::new("genisoimage")
        .args(["-quiet", "-J", "-r", "-V", label, "-o"])
        .arg(&out)
        .arg(&tree)
        .status()
        .unwrap();
    assert!(st.success());
    out
}

fn vm_json(k: &Kilnd, id: &str) -> VmConfig {
    let b = std::fs::read(k.state_path(&format!("servers/{id}/vm.json"))).unwrap();
    serde_json::from_slice(&b).unwrap()
}

/// One file of an ISO, through its Rock Ridge tree.
fn iso_file(iso: &Path, name: &str) -> Vec<u8> {
    let o = Command::new("isoinfo")
        .args(["-R", "-x", name, "-i"])
        .arg(iso)
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    o.stdout
}

/// `POST /v1/servers` that must be refused with `status`, the message
/// containing `want`.
fn refused(k: &Kilnd, body: serde_json::Value, status: u16, want: &str) {
    let r = k.req("POST", "/v1/servers", Some(&body.to_string()));
    assert_eq!(r.status, status, "{body}: {}", r.text());
    assert!(r.text().contains(want), "{want:?} not in {}", r.text());
}

/// An answer file with every byte value after the XML.
fn answer() -> Vec<u8> {
    let mut u =
        b"<?xml version=\"1.0\"?>\n<unattend xmlns=\"urn:schemas-microsoft-com:unattend\"/>\n"
            .to_vec();
    u.extend(0..=255u8);
    u
}

#[test]
fn iso_servers_get_a_blank_root_disk_their_cdroms_and_an_answer_file() {
    let k = start_fw_kilnd();
    let dir = k.dir.path();
    // The installer: an El Torito ISO whose boot image prints on COM1.
    let setup = kiln_tests::disk::el_torito_iso(dir);
    let drivers = iso(dir, "drivers.iso", "DRIVERS");

    // Import: an ISO is checked to be ISO 9660. A Windows one puts its
    // servers' root disks on SATA (a Windows server cannot run here: its
    // Hyper-V enlightenments need hardware KVM, so the server below boots
    // a Linux ISO and asks for SATA itself).
    let win = k.import_disk_with("win", &setup, "iso", r#","os_type":"windows""#);
    assert_eq!(
        win.disk_bus,
        DiskBus::Sata,
        "a Windows ISO: SATA root disks"
    );
    let img = k.import_disk("setup", &setup, "iso");
    let ImageKind::Disk { format, path, .. } = &img.kind else {
        panic!("{img:?}")
    };
    assert_eq!(*format, ImageFormat::Iso);
    assert!(path.ends_with(".iso"), "{path}");
    assert_eq!(img.disk_bus, DiskBus::Virtio);
    let drv = k.import_disk("drivers", &drivers, "iso");
    assert_eq!(drv.disk_bus, DiskBus::Virtio);
    let not_iso = dir.join("plain.raw");
    std::fs::write(&not_iso, vec![7u8; 64 << 10]).unwrap();
    let body = format!(
        r#"{{"type":"disk","name":"fake","path":"{}","format":"iso"}}"#,
        not_iso.display()
    );
    let r = k.req("POST", "/v1/images", Some(&body));
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("not an ISO 9660 image"), "{}", r.text());
    let raw = k.import_disk("rawdisk", &not_iso, "raw");

    // Refusals, each naming its rule; nothing is made.
    let r = k.req(
        "POST",
        "/v1/flavors",
        Some(r#"{"name":"nodisk","vcpus":1,"ram_mb":256,"disk_gb":0}"#),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let base = serde_json::json!({"name": "inst", "flavor": "fw.small", "image": "setup",
                                  "disk_bus": "sata"});
    let with = |extra: serde_json::Value| {
        let mut b = base.clone();
        b.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        b
    };
    refused(
        &k,
        with(serde_json::json!({"flavor": "nodisk"})),
        400,
        "needs a disk",
    );
    refused(
        &k,
        with(serde_json::json!({"cdroms": ["rawdisk"]})),
        400,
        "not an ISO",
    );
    refused(
        &k,
        with(serde_json::json!({"cdroms": ["nope"]})),
        400,
        "unknown image",
    );
    refused(
        &k,
        with(serde_json::json!({"answer_file": true})),
        400,
        "answer_file needs user_data",
    );
    let seven: Vec<&str> = vec!["drivers"; 5];
    refused(
        &k,
        with(serde_json::json!({"cdroms": seven, "answer_file": true, "user_data": "eA=="})),
        400,
        "too many SATA disks and CD-ROMs: 8",
    );
    let list: serde_json::Value = k.json("GET", "/v1/servers", None);
    assert_eq!(list["servers"].as_array().unwrap().len(), 0, "{list}");

    // The server: blank root disk, setup ISO first, drivers, answer file.
    let ans = answer();
    let s: Server = k.create_server(
        &with(serde_json::json!({
            "cdroms": ["drivers"], "answer_file": true,
            "user_data": base64ct::Base64::encode_string(&ans),
        }))
        .to_string(),
    );
    assert_eq!(s.disk_bus, DiskBus::Sata);
    assert_eq!(s.cdroms, vec![drv.id.clone()]);
    assert!(s.answer_file);
    let s = k.wait_status(&s.id, ServerStatus::Active, common::vm::T);
    // SeaBIOS boots the ISO from the CD-ROM on kiln-vmm's AHCI controller,
    // before the blank SATA disk on port 0.
    common::vm::wait_until("the ISO's boot image on the console", BOOT, || {
        common::vm::console(&k, &s.id).contains("KILN-CD-PVD-OK")
    });
    let cfg = vm_json(&k, &s.id);
    assert_eq!(cfg.disks.len(), 1, "{:?}", cfg.disks);
    assert_eq!(cfg.disks[0].bus, DiskBus::Sata);
    assert!(
        cfg.disks[0].backing.is_empty(),
        "a blank disk: {:?}",
        cfg.disks[0]
    );
    let root = PathBuf::from(&cfg.disks[0].path);
    let info = qemu_img_info(&root);
    assert_eq!(info["virtual-size"], 1u64 << 30, "{info}");
    assert!(info.get("backing-filename").is_none(), "{info}");
    let answer_iso = k.state_path(&format!("servers/{}/answer.iso", s.id));
    let cdroms: Vec<&str> = cfg.cdroms.iter().map(|c| c.path.as_str()).collect();
    let ImageKind::Disk { path: drv_path, .. } = &drv.kind else {
        unreachable!()
    };
    assert_eq!(
        cdroms,
        vec![
            path.as_str(),
            drv_path.as_str(),
            &answer_iso.display().to_string()
        ]
    );
    assert_eq!(iso_file(&answer_iso, "/autounattend.xml"), ans);
    let blkid = Command::new("blkid").arg(&answer_iso).output().unwrap();
    let blkid = String::from_utf8_lossy(&blkid.stdout);
    assert!(blkid.contains(r#"LABEL="UNATTEND""#), "{blkid}");

    // The ISOs a server uses cannot be deleted, as its boot image or on a
    // further CD-ROM; a plain disk image nobody uses can.
    for name in ["setup", "drivers"] {
        let r = k.req("DELETE", &format!("/v1/images/{name}"), None);
        assert_eq!(r.status, 409, "{name}: {}", r.text());
        assert!(r.text().contains("in use"), "{}", r.text());
    }
    let r = k.req("DELETE", &format!("/v1/images/{}", raw.id), None);
    assert_eq!(r.status, 204, "{}", r.text());

    // The CLI shows the media; a delete takes the answer file along.
    let (ok, out, err) = k.cli(&["server", "show", "inst"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("disk_bus: sata") && out.contains("answer_file: true"),
        "{out}"
    );
    k.delete_server(&s.id);
    assert!(!answer_iso.exists());
    for name in ["win", "setup", "drivers"] {
        let r = k.req("DELETE", &format!("/v1/images/{name}"), None);
        assert_eq!(r.status, 204, "{name}: {}", r.text());
    }
}

/// `virt-fw-vars --print --verbose` of an OVMF variable store (the tool
/// setup.sh enrolls the template's keys with).
fn vars_print(fd: &Path) -> String {
    let tool = kiln_tests::cache_dir().join("venv/bin/virt-fw-vars");
    let o = Command::new(tool)
        .args(["--loglevel", "warning", "-p", "-v", "-i"])
        .arg(fd)
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn secure_boot_servers_get_the_4m_ovmf_and_an_enrolled_variable_store() {
    let k = start_fw_kilnd();
    let disk = kiln_tests::disk::blank_raw(k.dir.path(), "blank.raw");
    // Secure Boot is UEFI's: with SeaBIOS, a 400 at import and at create.
    let body = format!(
        r#"{{"type":"disk","name":"sb-bios","path":"{}","format":"raw","firmware":"bios","secure_boot":true}}"#,
        disk.display()
    );
    let r = k.req("POST", "/v1/images", Some(&body));
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.text().contains("secure_boot needs firmware uefi"),
        "{}",
        r.text()
    );
    let win = k.import_disk_with(
        "win",
        &disk,
        "raw",
        r#","firmware":"uefi","os_type":"windows""#,
    );
    assert!(win.secure_boot, "Windows on UEFI: Secure Boot by default");
    let linux = k.import_disk_with("efi", &disk, "raw", r#","firmware":"uefi""#);
    assert!(!linux.secure_boot);
    refused(
        &k,
        serde_json::json!({"name": "b", "flavor": "fw.small", "image": "efi",
                           "firmware": "bios", "secure_boot": true}),
        400,
        "secure_boot needs firmware uefi",
    );

    // A Secure Boot server and a plain one from the same image.
    let sb: Server =
        k.create_server(r#"{"name":"sb","flavor":"fw.small","image":"efi","secure_boot":true}"#);
    assert!(sb.secure_boot);
    let plain: Server = k.create_server(r#"{"name":"plain","flavor":"fw.small","image":"efi"}"#);
    assert!(!plain.secure_boot);
    for s in [&sb, &plain] {
        // OVMF's early phases die on this machine's emulated x87 (see
        // testbed.md), so the server may end in ERROR; its VMM was started
        // from what it was given.
        let nvram = k.state_path(&format!("servers/{}/nvram.fd", s.id));
        common::vm::wait_until("its vm.json and nvram.fd", common::vm::T, || {
            k.state_path(&format!("servers/{}/vm.json", s.id)).exists() && nvram.exists()
        });
        let cfg = vm_json(&k, &s.id);
        let fw = cfg.firmware.unwrap();
        let vars = vars_print(&nvram);
        if s.secure_boot {
            assert!(fw.path.ends_with("OVMF_CODE_4M.fd"), "{}", fw.path);
            let sb_var = vars
                .split("name=SecureBootEnable")
                .nth(1)
                .and_then(|v| v.lines().nth(1));
            assert_eq!(sb_var.map(str::trim), Some("bool: ON"), "{vars}");
            for want in [
                "Microsoft Corporation KEK 2K CA 2023",
                "Microsoft Corporation KEK CA 2011",
                "Windows UEFI CA 2023",
                "Microsoft Windows Production PCA 2011",
                "Microsoft UEFI CA 2023",
            ] {
                assert!(vars.contains(want), "{want} not in:\n{vars}");
            }
        } else {
            assert!(fw.path.ends_with("OVMF_CODE.fd"), "{}", fw.path);
            assert!(!vars.contains("name=PK"), "{vars}");
        }
    }
    let (ok, out, err) = k.cli(&["server", "show", "sb"]);
    assert!(ok, "{err}");
    assert!(out.contains("secure_boot: true"), "{out}");
}

#[test]
fn a_secure_boot_store_that_lost_secure_boot_is_not_booted_until_reset() {
    let k = start_fw_kilnd();
    let disk = kiln_tests::disk::blank_raw(k.dir.path(), "blank.raw");
    k.import_disk_with("efi", &disk, "raw", r#","firmware":"uefi""#);
    k.import_disk_with("legacy", &disk, "raw", r#","firmware":"bios""#);
    let bios: Server = k.create_server(r#"{"name":"legacy","flavor":"fw.small","image":"legacy"}"#);
    common::vm::wait_until("its boot", common::vm::T, || {
        let s = k.server(&bios.id);
        s.task_state.is_none() && s.status != ServerStatus::Build
    });
    let r = k.req(
        "POST",
        &format!("/v1/servers/{}/action", bios.id),
        Some(r#"{"action":"reset_nvram"}"#),
    );
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(r.text().contains("no variable store"), "{}", r.text());

    let sb: Server =
        k.create_server(r#"{"name":"sb","flavor":"fw.small","image":"efi","secure_boot":true}"#);
    let nvram = k.state_path(&format!("servers/{}/nvram.fd", sb.id));
    // OVMF dies early on this machine (testbed.md), so the server ends in
    // ERROR or runs; either way it is stopped before the store is touched.
    common::vm::wait_until("its first boot", common::vm::T, || {
        let s = k.server(&sb.id);
        nvram.exists() && s.task_state.is_none() && s.status != ServerStatus::Build
    });
    if k.server(&sb.id).status == ServerStatus::Active {
        common::vm::action(&k, &sb.id, r#"{"action":"stop"}"#);
        k.wait_status(&sb.id, ServerStatus::Shutoff, common::vm::T);
    }
    let r = k.req(
        "POST",
        &format!("/v1/servers/{}/action", sb.id),
        Some(r#"{"action":"reset_nvram"}"#),
    );
    assert!(r.status == 202, "{}", r.text());
    common::vm::wait_until("the store removed", common::vm::T, || !nvram.exists());

    // What a guest kernel could do without SMM: delete the platform key.
    let tampered = k.dir.path().join("tampered.fd");
    std::fs::write(
        &nvram,
        std::fs::read(kiln_tests::cache_dir().join("guest/OVMF_VARS_4M.ms2023.fd")).unwrap(),
    )
    .unwrap();
    let tool = kiln_tests::cache_dir().join("venv/bin/virt-fw-vars");
    let o = Command::new(tool)
        .args(["--loglevel", "warning", "-i"])
        .arg(&nvram)
        .args(["-o"])
        .arg(&tampered)
        .args(["--delete", "PK"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    std::fs::rename(&tampered, &nvram).unwrap();
    common::vm::action(&k, &sb.id, r#"{"action":"start"}"#);
    let s = k.wait_status(&sb.id, ServerStatus::Error, common::vm::T);
    let fault = s.fault.map(|f| f.message).unwrap_or_default();
    assert!(
        fault.contains("no longer has Secure Boot on") && fault.contains("no platform key"),
        "{fault}"
    );
    assert!(
        common::procs_under(&k.state_path(&format!("servers/{}", sb.id))).is_empty(),
        "no VMM started on a store without Secure Boot"
    );

    // reset_nvram: the next start copies the enrolled template again.
    common::vm::action(&k, &sb.id, r#"{"action":"reset_nvram"}"#);
    common::vm::wait_until("the store removed", common::vm::T, || !nvram.exists());
    common::vm::action(&k, &sb.id, r#"{"action":"start"}"#);
    common::vm::wait_until("a new store", common::vm::T, || nvram.exists());
    let vars = vars_print(&nvram);
    assert!(vars.contains("name=PK"), "{vars}");
    common::vm::wait_until("the start done", common::vm::T, || {
        k.server(&sb.id).task_state.is_none()
    });
    let fault = k
        .server(&sb.id)
        .fault
        .map(|f| f.message)
        .unwrap_or_default();
    assert!(!fault.contains("Secure Boot"), "{fault}");
}
