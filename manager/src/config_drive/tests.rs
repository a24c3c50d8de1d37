//! Config drives checked by other readers: util-linux's `blkid`,
//! genisoimage's `isoinfo` (primary, Joliet and Rock Ridge trees), and
//! cloud-init's own config-drive reader (Debian's `cloud-init` package)
//! on the files taken out of the image.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use std::collections::BTreeSet;

use super::{build, ConfigDriveError};
use crate::metadata::{drive_files, Facts, Key};

const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKwP3w2VxSx0G5Jc5mB1oKvQ9kGmK1n1mJ0n7pW5yQ4h me@host";

fn facts(user_data: Vec<u8>) -> Facts {
    Facts {
        id: "6f1b7f4e-2f0a-4c55-9d7b-0d9c3f1e2a11".into(),
        name: "Web_1".into(),
        hostname: "web-1.novalocal".into(),
        availability_zone: "nova".into(),
        flavor: "m1.tiny".into(),
        image_id: "i".into(),
        key: Some(Key {
            name: "mine".into(),
            kind: "ssh".into(),
            public_key: KEY.into(),
        }),
        admin_pass: Some("s3cret pass".into()),
        user_data: Some(user_data),
        meta: [("role".to_owned(), "db".to_owned())].into(),
        ..Facts::default()
    }
}

fn run(cmd: &str, args: &[&str]) -> String {
    let o = Command::new(cmd).args(args).output().unwrap();
    assert!(o.status.success(), "{cmd} {args:?}: {o:?}");
    String::from_utf8(o.stdout).unwrap()
}

/// Every byte value, and a cloud-config, as user data.
fn binary_user_data() -> Vec<u8> {
    let mut u = b"#cloud-config\nhostname: from-user-data\n".to_vec();
    u.extend(0..=255u8);
    u
}

/// Takes `files` out of `iso` through its Rock Ridge tree with isoinfo.
fn extract(iso: &Path, files: &[&str], to: &Path) {
    for f in files {
        let o = Command::new("isoinfo")
            .args(["-R", "-x", &format!("/{f}"), "-i"])
            .arg(iso)
            .output()
            .unwrap();
        assert!(o.status.success());
        let p = to.join(f);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, o.stdout).unwrap();
    }
}

/// cloud-init's `read_config_drive` on `dir`, as JSON.
fn cloud_init_reads(dir: &Path) -> serde_json::Value {
    const READ: &str = r#"
import json, sys
from cloudinit.sources.DataSourceConfigDrive import read_config_drive
r = read_config_drive(sys.argv[1])
md = r["metadata"]
print(json.dumps({
    "uuid": md["uuid"], "name": md["name"], "hostname": md["hostname"],
    "public_keys": md["public_keys"], "admin_pass": md.get("admin_pass"),
    "meta": md["meta"], "userdata": r["userdata"].hex(),
    "ec2": r.get("ec2-metadata"), "version": r["version"],
}))
"#;
    // Debian's python, which has cloud-init's modules.
    let out = run("/usr/bin/python3", &["-c", READ, dir.to_str().unwrap()]);
    serde_json::from_str(&out).unwrap()
}

#[test]
fn blkid_isoinfo_and_cloud_init_read_the_drive() {
    let dir = tempfile::tempdir().unwrap();
    let iso = dir.path().join(super::FILE);
    let user_data = binary_user_data();
    let files = drive_files(&facts(user_data.clone()));
    let t = Instant::now();
    build(&files, &iso).unwrap();
    let took = t.elapsed();
    eprintln!("config drive built in {took:?}");
    assert!(took.as_secs() < 5, "{took:?}");
    // Nothing of the build is left beside it.
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(left.len(), 1, "{left:?}");

    let id = run("blkid", &[iso.to_str().unwrap()]);
    assert!(id.contains(r#"LABEL="config-2""#), "{id}");
    assert!(id.contains(r#"TYPE="iso9660""#), "{id}");
    let d = run("isoinfo", &["-d", "-i", iso.to_str().unwrap()]);
    for want in [
        "Volume id: config-2",
        "Joliet with UCS level 3 found",
        "Rock Ridge signatures version 1 found",
    ] {
        assert!(d.contains(want), "{want} not in\n{d}");
    }
    let names: Vec<&str> = files.iter().map(|(p, _)| p.as_str()).collect();
    for want in [
        "openstack/latest/meta_data.json",
        "openstack/latest/user_data",
        "openstack/latest/network_data.json",
        "openstack/2012-08-10/meta_data.json",
        "ec2/latest/meta-data.json",
    ] {
        assert!(names.contains(&want), "{want} not in {names:?}");
    }
    // The Rock Ridge and the Joliet trees carry the real names: every
    // file and the directories above it.
    let mut want = BTreeSet::new();
    for n in &names {
        let mut at = String::new();
        for part in n.split('/') {
            at.push('/');
            at.push_str(part);
            want.insert(at.clone());
        }
    }
    for tree in ["-R", "-J"] {
        let list = run("isoinfo", &["-f", tree, "-i", iso.to_str().unwrap()]);
        let got: BTreeSet<String> = list.lines().map(str::to_owned).collect();
        assert_eq!(got, want, "isoinfo -f {tree}");
    }

    let tree = dir.path().join("mnt");
    extract(&iso, &names, &tree);
    let r = cloud_init_reads(&tree);
    assert_eq!(r["uuid"], "6f1b7f4e-2f0a-4c55-9d7b-0d9c3f1e2a11");
    assert_eq!(r["name"], "Web_1");
    assert_eq!(r["hostname"], "web-1.novalocal");
    assert_eq!(r["public_keys"]["mine"], KEY);
    assert_eq!(r["admin_pass"], "s3cret pass");
    assert_eq!(r["meta"]["role"], "db");
    assert_eq!(r["version"], 2);
    assert_eq!(r["ec2"]["public-keys"]["0"]["openssh-key"], KEY);
    // Byte for byte.
    let hex: String = user_data.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(r["userdata"], hex);
}

#[test]
fn bad_paths_are_refused_and_rebuilds_replace_the_image() {
    let dir = tempfile::tempdir().unwrap();
    let iso = dir.path().join("d.iso");
    for bad in ["", "/etc/passwd", "../x", "a/../../x", "a\0b"] {
        let files = vec![(bad.to_owned(), b"x".to_vec())];
        assert!(
            matches!(build(&files, &iso), Err(ConfigDriveError::BadPath(_))),
            "{bad:?}"
        );
        assert!(!iso.exists());
    }
    build(&[("a/one".into(), b"1".to_vec())], &iso).unwrap();
    build(&[("b/two".into(), b"22".to_vec())], &iso).unwrap();
    let list = run("isoinfo", &["-f", "-R", "-i", iso.to_str().unwrap()]);
    assert_eq!(list.lines().collect::<Vec<_>>(), ["/b", "/b/two"]);
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(left.len(), 1, "{left:?}");
}
