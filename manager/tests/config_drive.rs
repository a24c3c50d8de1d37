//! Config drives end to end, on a real kilnd and real kiln-vmm on KVM: a
//! server created with `config_drive`, a key pair, an admin password and
//! user data gets `servers/ID/disk.config`, an ISO 9660 image labelled
//! `config-2` (blkid) whose files (isoinfo) carry its uuid, name, key and
//! user data byte for byte; kiln-vmm has it read-only as the second disk,
//! and SeaBIOS sees it there: the boot sector probe
//! (images/mbr/config_drive.s) on the root disk reads the ISO's primary
//! volume descriptor from BIOS drive 0x81 and is refused a write. A start
//! and a hard reboot rebuild it from the store (a spoiled image comes back
//! whole); a kilnd restart that re-adopts the running VMM leaves it be; a
//! delete removes it. The CLI's `--config-drive --user-data FILE` reach
//! the same image.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use base64ct::Encoding;
use common::firmware::{firmware_config, import_disk_fw, start_fw_kilnd};
use common::vm::{action, assert_nothing_left, console, register, start_kilnd, wait_until, T};
use common::Kilnd;
use kiln_api::compute::{Server, ServerStatus};
use kiln_api::vm::{DiskFormat, VmConfig};
use kiln_tests::disk::config_drive_probe_disk;

/// SeaBIOS takes a few seconds here; much more under load.
const BOOT: Duration = Duration::from_secs(180);

/// `ssh-keygen` an ed25519 key in `dir`, imported as key pair `name`: its
/// public line.
fn key_pair(k: &Kilnd, name: &str) -> String {
    let path = k.dir.path().join(name);
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "me@host", "-f"])
        .arg(&path)
        .status()
        .unwrap();
    assert!(st.success());
    let public = std::fs::read_to_string(path.with_extension("pub")).unwrap();
    let public = public.trim().to_owned();
    let body = serde_json::json!({"name": name, "public_key": public});
    let r = k.req("POST", "/v1/keypairs", Some(&body.to_string()));
    assert_eq!(r.status, 201, "{}", r.text());
    public
}

/// A cloud-config and every byte value.
fn user_data() -> Vec<u8> {
    let mut u = b"#cloud-config\nhostname: cd\n".to_vec();
    u.extend(0..=255u8);
    u
}

/// One file of the image, through its Rock Ridge tree.
fn iso_file(iso: &Path, name: &str) -> Vec<u8> {
    let o = Command::new("isoinfo")
        .args(["-R", "-x", name, "-i"])
        .arg(iso)
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    o.stdout
}

fn blkid(iso: &Path) -> String {
    let o = Command::new("blkid").arg(iso).output().unwrap();
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The image is the config drive of server `s` with `public` as key
/// `mine` and `ud` as user data.
fn assert_drive_of(iso: &Path, s: &Server, public: &str, ud: &[u8]) {
    let id = blkid(iso);
    assert!(
        id.contains(r#"LABEL="config-2""#) && id.contains(r#"TYPE="iso9660""#),
        "{id}"
    );
    let meta: serde_json::Value =
        serde_json::from_slice(&iso_file(iso, "/openstack/latest/meta_data.json")).unwrap();
    assert_eq!(meta["uuid"], s.id.as_str(), "{meta}");
    assert_eq!(meta["name"], s.name.as_str());
    assert_eq!(meta["public_keys"]["mine"], public);
    assert_eq!(meta["admin_pass"], "pw 1");
    assert_eq!(iso_file(iso, "/openstack/latest/user_data"), ud);
}

fn vm_json(k: &Kilnd, id: &str) -> VmConfig {
    let b = std::fs::read(k.state_path(&format!("servers/{id}/vm.json"))).unwrap();
    serde_json::from_slice(&b).unwrap()
}

#[test]
fn config_drive_is_rebuilt_at_each_start_seen_by_seabios_and_deleted() {
    if !Path::new("/dev/kvm").exists() {
        eprintln!("config drive e2e: skipped: /dev/kvm is missing (needs KVM)");
        return;
    }
    let k = start_fw_kilnd();
    let disk = config_drive_probe_disk(k.dir.path());
    import_disk_fw(&k, "cdprobe", &disk, "raw", Some("bios"));
    let public = key_pair(&k, "mine");
    let ud = user_data();
    let body = serde_json::json!({
        "name": "cd", "flavor": "fw.small", "image": "cdprobe", "config_drive": true,
        "key_name": "mine", "admin_pass": "pw 1", "metadata": {"role": "db"},
        "user_data": base64ct::Base64::encode_string(&ud),
    });
    let s = k.create_server(&body.to_string());
    assert!(s.config_drive);

    // The probe reads the drive and powers off: SHUTOFF.
    let done = k.wait_status(&s.id, ServerStatus::Shutoff, BOOT);
    assert!(done.fault.is_none(), "{done:?}");
    assert!(done.config_drive);
    let out = console(&k, &s.id);
    for want in ["KILNCD-DISKS 2", "KILNCD-PVD config-2", "KILNCD-RO"] {
        assert!(out.contains(want), "{want} not in:\n{out}");
    }
    assert!(
        !out.contains("KILNCD-FAIL") && !out.contains("WRITABLE"),
        "{out}"
    );

    // kiln-vmm's disks: the root overlay, then the drive, read-only.
    let iso = k.state_path(&format!("servers/{}/disk.config", s.id));
    let cfg = vm_json(&k, &s.id);
    assert_eq!(cfg.disks.len(), 2, "{:?}", cfg.disks);
    assert!(!cfg.disks[0].readonly);
    assert_eq!(cfg.disks[1].path, iso.display().to_string());
    assert_eq!(cfg.disks[1].format, DiskFormat::Raw);
    assert!(cfg.disks[1].readonly);
    assert_drive_of(&iso, &s, &public, &ud);

    // A start rebuilds it from the store: a spoiled image comes back.
    let before = std::fs::metadata(&iso).unwrap().ino();
    std::fs::write(&iso, vec![0u8; 1 << 16]).unwrap();
    action(&k, &s.id, r#"{"action":"start"}"#);
    wait_until("the second boot's probe", BOOT, || {
        console(&k, &s.id).matches("KILNCD-RO").count() == 2
    });
    k.wait_status(&s.id, ServerStatus::Shutoff, BOOT);
    let out = console(&k, &s.id);
    assert_eq!(out.matches("KILNCD-PVD config-2").count(), 2, "{out}");
    assert_ne!(std::fs::metadata(&iso).unwrap().ino(), before);
    assert_drive_of(&iso, &s, &public, &ud);

    k.delete_server(&s.id);
    assert!(!iso.exists());
    assert_nothing_left(&k);
}

/// `kiln server create --config-drive --user-data FILE --key-name K
/// --admin-pass P`: the same drive (built before the VMM starts, which
/// this kilnd has not).
#[test]
fn cli_config_drive_and_user_data_file() {
    let k = Kilnd::start(&format!("{}{}", common::api::NO_VMM, firmware_config()));
    common::firmware::fw_flavor(&k);
    let disk = k.dir.path().join("blank.raw");
    std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
    import_disk_fw(&k, "blank", &disk, "raw", Some("bios"));
    let public = key_pair(&k, "mine");
    let ud = user_data();
    let file = k.dir.path().join("user-data.bin");
    std::fs::write(&file, &ud).unwrap();
    let file = file.display().to_string();
    let (ok, out, err) = k.cli(&[
        "--json",
        "server",
        "create",
        "cd",
        "--flavor",
        "fw.small",
        "--image",
        "blank",
        "--config-drive",
        "--user-data",
        &file,
        "--key-name",
        "mine",
        "--admin-pass",
        "pw 1",
    ]);
    assert!(ok, "{err}");
    let s: Server = serde_json::from_str(&out).unwrap();
    assert!(s.config_drive);
    // No kiln-vmm here: ERROR at its start, after the drive was built.
    k.wait_status(&s.id, ServerStatus::Error, Duration::from_secs(30));
    let (ok, shown, err) = k.cli(&["server", "show", "cd"]);
    assert!(ok && shown.contains("config_drive: true"), "{shown}{err}");
    let iso = k.state_path(&format!("servers/{}/disk.config", s.id));
    assert_drive_of(&iso, &s, &public, &ud);

    // Missing file: the CLI says so and nothing is made.
    let (ok, _, err) = k.cli(&[
        "server",
        "create",
        "cd2",
        "--flavor",
        "fw.small",
        "--image",
        "blank",
        "--user-data",
        "/nonexistent/ud",
    ]);
    assert!(!ok && err.contains("/nonexistent/ud"), "{err}");
    let (_, list, _) = k.cli(&["server", "list"]);
    assert!(!list.contains("cd2"), "{list}");
}

/// A running server (the `hold` probe, a kernel image, on a root disk):
/// a hard reboot's new VMM gets a new image; a kilnd restart re-adopts the
/// VMM and leaves the image it runs with alone.
#[test]
fn reboot_rebuilds_and_readoption_keeps_the_drive() {
    if !Path::new("/dev/kvm").exists() {
        eprintln!("config drive reboot: skipped: /dev/kvm is missing (needs KVM)");
        return;
    }
    let mut k = start_kilnd("");
    register(&k, "hold", "hello", "hold");
    let base = k.dir.path().join("base.raw");
    std::fs::write(&base, vec![0u8; 1 << 20]).unwrap();
    k.import_disk("base", &base, "raw");
    let public = key_pair(&k, "mine");
    let ud = user_data();
    let body = serde_json::json!({
        "name": "held", "flavor": "k1.probe", "image": "hold", "disk_image": "base",
        "config_drive": true, "key_name": "mine", "admin_pass": "pw 1",
        "user_data": base64ct::Base64::encode_string(&ud),
    });
    let s = k.create_server(&body.to_string());
    let s1 = k.wait_status(&s.id, ServerStatus::Active, T);
    let iso = k.state_path(&format!("servers/{}/disk.config", s.id));
    assert_drive_of(&iso, &s, &public, &ud);
    assert_eq!(vm_json(&k, &s.id).disks[1].path, iso.display().to_string());
    let first = std::fs::metadata(&iso).unwrap().ino();

    std::fs::write(&iso, b"spoiled").unwrap();
    action(&k, &s.id, r#"{"action":"reboot","type":"hard"}"#);
    wait_until("the reboot's new VMM", T, || {
        let now = k.server(&s.id);
        now.status == ServerStatus::Active && now.pid.is_some() && now.pid != s1.pid
    });
    assert_drive_of(&iso, &s, &public, &ud);
    let rebuilt = std::fs::metadata(&iso).unwrap().ino();
    assert_ne!(rebuilt, first);

    let pid = k.server(&s.id).pid;
    k.kill9();
    k.spawn();
    let again = k.server(&s.id);
    assert_eq!((again.status, again.pid), (ServerStatus::Active, pid));
    assert_eq!(std::fs::metadata(&iso).unwrap().ino(), rebuilt);

    k.delete_server(&s.id);
    assert!(!iso.exists());
    assert_nothing_left(&k);
}
