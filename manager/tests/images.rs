//! Images must not be a way to read host files (issue #11): paths are
//! imported only from the allowed directories, as regular files reached
//! without symlinks; kernels are checked when registered; a qcow2 image
//! that refers to anything outside itself is refused, by path, by upload,
//! and when planted in the store; and every kiln-vmm holds open only files
//! of its server's directory and the image store.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::api::{tiny_elf, NO_VMM};
use common::vm::{register, start_kilnd, T};
use common::{disk_of, Kilnd};
use kiln_api::client;
use kiln_api::compute::{Image, ImageStatus, ServerStatus};
use kiln_tests::disk::{qcow2_naming_backing, qcow2_with_data_file, qemu_img, raw_to_qcow2};

fn mkfifo(p: &Path) {
    let st = Command::new("mkfifo").arg(p).status().unwrap();
    assert!(st.success());
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// POSTs an image and answers (status, body).
fn post(k: &Kilnd, body: &str) -> (u16, String) {
    let r = k.req("POST", "/v1/images", Some(body));
    (r.status, r.text())
}

fn disk_req(name: &str, path: &str, format: &str) -> String {
    serde_json::json!({"type": "disk", "name": name, "path": path, "format": format}).to_string()
}

fn kernel_req(name: &str, kernel: &str, initramfs: Option<&str>) -> String {
    let mut v = serde_json::json!({"type": "kernel", "name": name, "kernel": kernel});
    if let Some(i) = initramfs {
        v["initramfs"] = i.into();
    }
    v.to_string()
}

fn refused(k: &Kilnd, body: &str, needle: &str) {
    let (status, text) = post(k, body);
    assert_eq!(status, 400, "{body}: {text}");
    assert!(text.contains(needle), "{body}: {text} lacks {needle:?}");
}

#[test]
fn import_paths_only_from_allowed_dirs() {
    let k = Kilnd::start(NO_VMM);
    let d = k.dir.path();
    std::os::unix::fs::symlink("/etc/shadow", d.join("shadow-link")).unwrap();
    std::os::unix::fs::symlink("/etc", d.join("etc")).unwrap();
    mkfifo(&d.join("fifo"));
    std::fs::create_dir(d.join("dir")).unwrap();
    // A device node inside the allowed directory (as /dev/zero).
    let st = Command::new("mknod")
        .arg(d.join("zero"))
        .args(["c", "1", "5"])
        .status()
        .unwrap();
    assert!(st.success(), "mknod (tests run as root)");
    let rule = "images.import_dirs";
    let cases: Vec<(String, &str)> = vec![
        ("/etc/shadow".into(), rule),
        ("/dev/zero".into(), rule),
        ("/tmp".into(), rule),
        (format!("{}/../../etc/shadow", d.display()), "'..'"),
        (s(&d.join("shadow-link")).into(), "symlink"),
        (s(&d.join("etc/shadow")).into(), "symlink"),
        (s(&d.join("fifo")).into(), "not a regular file"),
        (s(&d.join("zero")).into(), "not a regular file"),
        (s(&d.join("dir")).into(), "not a regular file"),
    ];
    for (i, (path, why)) in cases.iter().enumerate() {
        refused(&k, &disk_req(&format!("d{i}"), path, "raw"), why);
        refused(&k, &kernel_req(&format!("k{i}"), path, None), why);
        // As an initramfs beside a good kernel, too.
        let kernel = d.join("ok.elf");
        std::fs::write(&kernel, tiny_elf()).unwrap();
        refused(
            &k,
            &kernel_req(&format!("i{i}"), s(&kernel), Some(path)),
            why,
        );
    }
    // Kernels are checked when registered.
    let kfile = |name: &str, bytes: &[u8]| {
        let p = d.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    };
    let text = kfile("text", b"#!/bin/sh\necho not a kernel\n");
    refused(&k, &kernel_req("t", s(&text), None), "neither an ELF");
    let empty = kfile("empty", b"");
    refused(&k, &kernel_req("e", s(&empty), None), "empty");
    let fake = kfile("fake", b"\x7fELF not really");
    refused(&k, &kernel_req("f", s(&fake), None), "ELF");
    let big = d.join("big");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(257 << 20)
        .unwrap();
    refused(&k, &kernel_req("b", s(&big), None), "more than");
    let good = kfile("good.elf", &tiny_elf());
    refused(&k, &kernel_req("ie", s(&good), Some(s(&empty))), "empty");
    // Nothing of it was recorded; the good ones are accepted.
    assert_eq!(
        k.json("GET", "/v1/images", None)["images"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    let (status, text) = post(&k, &kernel_req("good", s(&good), None));
    assert_eq!(status, 201, "{text}");
    let raw = kfile("disk.raw", &[7u8; 4096]);
    k.import_disk("disk", &raw, "raw");
    // The kernel was copied into the store at registration: what is at its
    // path now (a symlink to /etc/shadow) is never read again.
    let img = k.image("good");
    let copy = k.state_path(&format!("images/{}.kernel", img.id));
    assert_eq!(std::fs::read(&copy).unwrap(), tiny_elf());
    std::fs::remove_file(&good).unwrap();
    std::os::unix::fs::symlink("/etc/shadow", &good).unwrap();
    let r = k.req(
        "POST",
        "/v1/servers",
        Some(r#"{"name":"s","flavor":"m1.tiny","image":"good"}"#),
    );
    assert_eq!(r.status, 202, "{}", r.text());
    let id = r.json::<kiln_api::compute::Server>().unwrap().id;
    k.wait_status(&id, ServerStatus::Error, T);
    k.delete_server(&id);
    // Deleting the image removes its copy.
    assert_eq!(k.req("DELETE", "/v1/images/good", None).status, 204);
    assert!(!copy.exists());
}

/// A kilnd whose allowed directories include /etc reads /etc's regular
/// files, and still no symlink, FIFO or device there.
#[test]
fn an_allowed_dir_is_the_admins_choice() {
    let k = Kilnd::start(&format!("{NO_VMM}[images]\nimport_dirs = [\"/etc\"]\n"));
    let (status, text) = post(&k, &disk_req("host", "/etc/passwd", "raw"));
    assert_eq!(status, 202, "{text}");
    // /etc/mtab is a symlink on Debian.
    if std::fs::symlink_metadata("/etc/mtab").is_ok_and(|m| m.file_type().is_symlink()) {
        refused(&k, &disk_req("mtab", "/etc/mtab", "raw"), "symlink");
    }
    // The test's own directory is not listed here.
    let own = k.dir.path().join("disk.raw");
    std::fs::write(&own, [1u8; 512]).unwrap();
    refused(&k, &disk_req("own", s(&own), "raw"), "images.import_dirs");
}

/// qcow2 images naming what they must not, made by the real qemu-img:
/// (name, file, what the refusal must name).
fn bad_qcow2s(d: &Path) -> Vec<(&'static str, PathBuf, String)> {
    let mut v = Vec::new();
    let mut backed = |name: &'static str, backing: &str| {
        let f = d.join(format!("{name}.qcow2"));
        qcow2_naming_backing(&f, backing, "raw");
        v.push((name, f, backing.to_owned()));
    };
    backed("shadow", "/etc/shadow");
    backed("relative", "../../../../etc/shadow");
    backed("zero", "/dev/zero");
    let fifo = d.join("backing-fifo");
    mkfifo(&fifo);
    backed("fifo", s(&fifo));
    // A chain through a symlink to a good image in the same directory.
    let base = d.join("base.raw");
    std::fs::write(&base, [3u8; 65536]).unwrap();
    std::os::unix::fs::symlink(&base, d.join("base-link")).unwrap();
    backed("link", s(&d.join("base-link")));
    backed("plain", s(&base));
    // An external data file.
    let df = d.join("data.qcow2");
    let data = d.join("data.raw");
    qcow2_with_data_file(&df, &data);
    v.push(("datafile", df, s(&data).to_owned()));
    v
}

#[test]
fn qcow2_naming_outside_files_is_refused_by_path_and_upload() {
    let k = Kilnd::start(NO_VMM);
    for (name, file, names) in bad_qcow2s(k.dir.path()) {
        // By path: a 400 at once, naming what it refers to.
        let (status, text) = post(&k, &disk_req(name, s(&file), "qcow2"));
        assert_eq!(status, 400, "{name}: {text}");
        assert!(text.contains(&names), "{name}: {text} lacks {names:?}");
        // By upload: a 400 too, and the image goes to error.
        let (status, text) = post(
            &k,
            &format!(r#"{{"type":"disk","name":"u-{name}","format":"qcow2","source":"upload"}}"#),
        );
        assert_eq!(status, 201, "{text}");
        let img: Image = serde_json::from_str(&text).unwrap();
        let r = client::upload(
            &k.socket,
            &format!("/v1/images/{}/file", img.id),
            &file,
            Duration::from_secs(30),
            |_, _| {},
        )
        .unwrap();
        assert_eq!(r.status, 400, "{name}: {}", r.text());
        assert!(r.text().contains(&names), "{name}: {}", r.text());
    }
    // Only refused uploads' records remain, no file.
    let files: Vec<_> = std::fs::read_dir(k.state_path("images"))
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(files.is_empty(), "{files:?}");
}

/// An image whose store file is changed behind kilnd's back to name a host
/// file: refused at server create, and put in error at kilnd's start.
#[test]
fn an_image_planted_in_the_store_is_refused() {
    let mut k = Kilnd::start(NO_VMM);
    let good = k.dir.path().join("good.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", s(&good), "1M"]);
    let img = k.import_disk("planted", &good, "qcow2");
    let (path, _, _) = disk_of(&img);
    qemu_img(&[
        "rebase",
        "-q",
        "-u",
        "-f",
        "qcow2",
        "-b",
        "/etc/shadow",
        "-F",
        "raw",
        path,
    ]);
    let kernel = k.dir.path().join("k.elf");
    std::fs::write(&kernel, tiny_elf()).unwrap();
    assert_eq!(post(&k, &kernel_req("k", s(&kernel), None)).0, 201);
    for body in [
        r#"{"name":"a","flavor":"m1.tiny","image":"planted"}"#,
        r#"{"name":"b","flavor":"m1.tiny","image":"k","disk_image":"planted"}"#,
    ] {
        let r = k.req("POST", "/v1/servers", Some(body));
        assert_eq!(r.status, 409, "{body}: {}", r.text());
        assert!(r.text().contains("/etc/shadow"), "{}", r.text());
    }
    assert_eq!(
        k.json("GET", "/v1/servers", None)["servers"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    // A symlink planted in place of a store file: refused too.
    let img2 = k.import_disk("swapped", &good, "qcow2");
    let (path2, _, _) = disk_of(&img2);
    std::fs::remove_file(path2).unwrap();
    std::os::unix::fs::symlink("/etc/shadow", path2).unwrap();
    let r = k.req(
        "POST",
        "/v1/servers",
        Some(r#"{"name":"c","flavor":"m1.tiny","image":"swapped"}"#),
    );
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(r.text().contains("not a regular file"), "{}", r.text());
    // A kernel image without its store copy (as an older kilnd left it)
    // whose registered path is now a symlink into /etc.
    let kimg = k.image("k");
    std::fs::remove_file(k.state_path(&format!("images/{}.kernel", kimg.id))).unwrap();
    std::fs::remove_file(&kernel).unwrap();
    std::os::unix::fs::symlink("/etc/shadow", &kernel).unwrap();
    // At start, all go to error with the reason as their fault.
    k.stop();
    k.spawn();
    for name in ["planted", "swapped", "k"] {
        let img = k.image(name);
        assert_eq!(img.status, ImageStatus::Error, "{img:?}");
        assert!(
            img.fault.as_deref().unwrap_or("").contains("refused"),
            "{img:?}"
        );
    }
}

/// Every open file of every kiln-vmm, for several servers on qcow2 and raw
/// images and a kernel from the cache: only the server's directory and the
/// image store, plus /dev/kvm, /dev/null, sockets, pipes and anon inodes.
#[test]
fn kiln_vmms_hold_only_store_and_server_files() {
    if !Path::new("/dev/kvm").exists() {
        eprintln!("SKIP: no /dev/kvm (these machines have it: this must not skip there)");
        return;
    }
    let k = start_kilnd("");
    let raw = k.dir.path().join("base.raw");
    std::fs::write(&raw, vec![5u8; 1 << 20]).unwrap();
    let qcow = k.dir.path().join("base.qcow2");
    raw_to_qcow2(&raw, &qcow, &[]);
    k.import_disk("raw", &raw, "raw");
    k.import_disk("qcow", &qcow, "qcow2");
    register(&k, "hold", "hello", "hold");
    let mut servers = Vec::new();
    for (i, disk) in ["raw", "qcow", "qcow"].iter().enumerate() {
        servers.push(k.create_server(&format!(
            r#"{{"name":"s{i}","flavor":"k1.probe","image":"hold","disk_image":"{disk}"}}"#
        )));
    }
    let store = k.state_path("images");
    let mut checked = 0;
    for s in &servers {
        let s = k.wait_status(&s.id, ServerStatus::Active, T);
        // Booted from the kernel's store copy, not the cache.
        let cfg: kiln_api::vm::VmConfig = serde_json::from_slice(
            &std::fs::read(k.state_path(&format!("servers/{}/vm.json", s.id))).unwrap(),
        )
        .unwrap();
        let kpath = cfg.kernel.expect("a kernel").path;
        assert!(Path::new(&kpath).starts_with(&store), "{kpath}");
        let pid = s.pid.expect("an active server has a pid");
        let dir = k.state_path(&format!("servers/{}", s.id));
        let mut seen_store = false;
        for e in std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap() {
            let Ok(target) = std::fs::read_link(e.unwrap().path()) else {
                continue; // closed meanwhile
            };
            let t = target.to_string_lossy();
            let fine = target.starts_with(&dir)
                || target.starts_with(&store)
                || ["/dev/kvm", "/dev/null", "/dev/urandom", "/dev/random"].contains(&t.as_ref())
                || ["socket:", "pipe:", "anon_inode:"]
                    .iter()
                    .any(|p| t.starts_with(p));
            assert!(fine, "kiln-vmm {pid} of {} holds {t}", s.name);
            seen_store |= target.starts_with(&store);
            checked += 1;
            eprintln!("kiln-vmm {pid} ({}): {t}", s.name);
        }
        assert!(seen_store, "kiln-vmm {pid} holds its image open");
    }
    assert!(checked > 3 * 5, "{checked} fds");
    eprintln!("{checked} fds of 3 kiln-vmms checked");
    for s in &servers {
        k.delete_server(&s.id);
    }
}

/// A kiln-vmm started by an older kilnd has a `vm.json` naming the kernel's
/// registered path and no backing file; it re-reads it when it resets. A
/// restarted kilnd re-adopts it and rewrites its `vm.json` to name the
/// kernel's store copy and the overlay's backing file.
#[test]
fn readopted_vmms_get_store_paths_in_vm_json() {
    if !Path::new("/dev/kvm").exists() {
        eprintln!("SKIP: no /dev/kvm (these machines have it: this must not skip there)");
        return;
    }
    let mut k = start_kilnd("");
    let raw = k.dir.path().join("base.raw");
    std::fs::write(&raw, vec![5u8; 1 << 20]).unwrap();
    let img = k.import_disk("raw", &raw, "raw");
    register(&k, "hold", "hello", "hold");
    let s =
        k.create_server(r#"{"name":"old","flavor":"k1.probe","image":"hold","disk_image":"raw"}"#);
    let s = k.wait_status(&s.id, ServerStatus::Active, T);
    let path = k.state_path(&format!("servers/{}/vm.json", s.id));
    let read = || -> kiln_api::vm::VmConfig {
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
    };
    let new = read();
    let mut old = new.clone();
    old.kernel.as_mut().unwrap().path = common::probe("hello").display().to_string();
    old.disks[0].backing.clear();
    k.kill9();
    std::fs::write(&path, serde_json::to_vec(&old).unwrap()).unwrap();
    k.spawn();
    let s2 = k.server(&s.id);
    assert_eq!(
        (s2.status, s2.pid),
        (ServerStatus::Active, s.pid),
        "re-adopted"
    );
    assert_eq!(read(), new);
    let (base, _, _) = disk_of(&img);
    assert_eq!(read().disks[0].backing[0].path, base);
    k.delete_server(&s.id);
}
