//! End-to-end tests of kilnd's API, placement and store through a real
//! kilnd process. The VMM binary is set to a path that does not exist, so
//! servers go to ERROR at boot; everything before boot is real.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::Duration;

use common::api::*;
use common::{disk_of, names, sha256sum, Kilnd};
use kiln_api::compute::{HostInfo, Server, ServerList, ServerStatus};

/// The gid of `group` from the group database (`getent`), if it exists.
fn group_gid(group: &str) -> Option<u32> {
    let out = std::process::Command::new("getent")
        .args(["group", group])
        .output()
        .unwrap();
    if !out.status.success() {
        return None;
    }
    let line = String::from_utf8(out.stdout).unwrap();
    Some(line.trim().split(':').nth(2).unwrap().parse().unwrap())
}

/// A first start on a machine without the socket group, eight kilnds at
/// once: each may run `groupadd`, and every socket must end up with the
/// gid the group has afterwards (groupadd's check-then-write race once left
/// a socket with a gid that no group had). A fresh group name per run makes
/// every run a first start.
#[test]
fn eight_first_starts_agree_on_the_socket_group() {
    let group = format!("kilnt{}", std::process::id());
    assert_eq!(group_gid(&group), None, "{group} exists before the test");
    struct Groupdel<'a>(&'a str);
    impl Drop for Groupdel<'_> {
        fn drop(&mut self) {
            let _ = std::process::Command::new("groupdel").arg(self.0).status();
        }
    }
    let _cleanup = Groupdel(&group);
    let config = format!("socket_group = \"{group}\"\n");
    let kilnds: Vec<Kilnd> = std::thread::scope(|s| {
        let starts: Vec<_> = (0..8).map(|_| s.spawn(|| Kilnd::start(&config))).collect();
        starts.into_iter().map(|t| t.join().unwrap()).collect()
    });
    let gid = group_gid(&group).expect("the first kilnd created the group");
    for k in &kilnds {
        let meta = std::fs::metadata(&k.socket).unwrap();
        assert_eq!(meta.gid(), gid, "socket {} of {group}", k.socket.display());
    }
}

#[test]
fn defaults_socket_and_openapi() {
    let k = Kilnd::start(NO_VMM);
    let meta = std::fs::metadata(&k.socket).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    // The group as it is now, whoever made it (this kilnd or an earlier one).
    let kiln_gid = group_gid("kiln").expect("group kiln exists");
    assert_eq!(meta.gid(), kiln_gid);

    // Seeded flavors.
    let names = names(&k.json("GET", "/v1/flavors", None), "flavors");
    for n in ["m1.tiny", "m1.small", "m1.medium", "m1.large", "k1.probe"] {
        assert!(names.iter().any(|m| m == n), "{n} missing from {names:?}");
    }
    let m = k.json("GET", "/v1/flavors/m1.small", None);
    assert_eq!(
        (
            m["vcpus"].as_u64(),
            m["ram_mb"].as_u64(),
            m["disk_gb"].as_u64()
        ),
        (Some(1), Some(2048), Some(20))
    );

    // Host: measured totals, Nova's default ratios.
    let h: HostInfo = k.req("GET", "/v1/host", None).json().unwrap();
    assert_eq!(
        h.vcpus.total as usize,
        std::thread::available_parallelism().unwrap().get()
    );
    assert_eq!(h.vcpus.allocation_ratio, 4.0);
    assert_eq!(h.vcpus.capacity, h.vcpus.total * 4);
    assert_eq!(h.ram_mb.reserved, 512);
    assert_eq!(h.ram_mb.capacity, h.ram_mb.total - 512);
    assert_eq!((h.vcpus.used, h.servers), (0, 0));

    // The OpenAPI document is served, and every path in it is routed.
    let doc = k.json("GET", "/openapi.json", None);
    for (path, ops) in doc["paths"].as_object().unwrap() {
        let concrete = path.replace("{id}", "m1.tiny");
        for method in ops
            .as_object()
            .unwrap()
            .keys()
            .filter(|m| *m != "parameters")
        {
            if method == "delete" {
                continue;
            }
            let body = if method == "get" { None } else { Some("{}") };
            let r = k.req(&method.to_uppercase(), &concrete, body);
            assert!(
                !r.text().contains("no such route"),
                "{method} {path} not routed"
            );
            assert!(r.status < 500, "{method} {path}: {}", r.status);
        }
    }

    // --print-default-config prints the embedded defaults.
    let out = std::process::Command::new(common::kilnd_bin())
        .arg("--print-default-config")
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("cpu_allocation_ratio = 4.0")
            && text.contains("reserved_host_memory_mb = 512")
    );
    kiln_manager::config::Config::parse(&text).unwrap();
}

#[test]
fn flavors_and_images_crud() {
    let k = Kilnd::start(NO_VMM);
    let f = k.json(
        "POST",
        "/v1/flavors",
        Some(r#"{"name":"x1.odd","vcpus":3,"ram_mb":300,"disk_gb":3}"#),
    );
    let id = f["id"].as_str().unwrap();
    assert_eq!(
        k.json("GET", &format!("/v1/flavors/{id}"), None)["name"],
        "x1.odd"
    );
    assert_eq!(
        k.req(
            "POST",
            "/v1/flavors",
            Some(r#"{"name":"x1.odd","vcpus":1,"ram_mb":1,"disk_gb":1}"#)
        )
        .status,
        409
    );
    assert_eq!(
        k.req("DELETE", &format!("/v1/flavors/{id}"), None).status,
        204
    );
    assert_eq!(k.req("GET", &format!("/v1/flavors/{id}"), None).status, 404);

    // A disk image is copied into the store with its sha256.
    let src = k.dir.path().join("disk.raw");
    std::fs::write(&src, vec![7u8; 3 << 20]).unwrap();
    let img = k.import_disk("d1", &src, "raw");
    let (path, size_bytes, sha256) = disk_of(&img);
    assert_eq!(size_bytes, 3 << 20);
    assert_eq!(sha256, sha256sum(&src));
    assert!(path.starts_with(k.state.to_str().unwrap()));
    assert_eq!(std::fs::read(path).unwrap().len(), 3 << 20);
    // A disk image boots through firmware (bios unless registered
    // otherwise; tests/firmware.rs boots one), with itself as root disk;
    // in use, it cannot be deleted.
    let r = create(&k, "s", "k1.probe", "d1");
    assert_eq!(r.status, 202, "{}", r.text());
    let s: Server = r.json().unwrap();
    assert_eq!(s.firmware, Some(kiln_api::compute::Firmware::Bios));
    assert_eq!(s.disk_image_id.as_deref(), Some(img.id.as_str()));
    assert_eq!(k.req("DELETE", "/v1/images/d1", None).status, 409);
    k.delete_server(&s.id);

    // An image in use cannot be deleted; after the server goes it can.
    let kimg = kernel_image(&k, "kern");
    let r = create(&k, "s", "k1.probe", "kern");
    assert_eq!(r.status, 202, "{}", r.text());
    let s: Server = r.json().unwrap();
    let r = k.req("DELETE", "/v1/images/kern", None);
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(r.text().contains("in use"), "{}", r.text());
    // No VMM binary: the server goes to ERROR with a fault that says why.
    let e = k.wait_status(&s.id, ServerStatus::Error, Duration::from_secs(10));
    let fault = e.fault.unwrap().message;
    assert!(
        fault.contains("cannot start kiln-vmm") && fault.contains("/nonexistent/kiln-vmm"),
        "{fault}"
    );
    k.delete_server(&s.id);
    assert_eq!(
        k.req("GET", &format!("/v1/servers/{}", s.id), None).status,
        404
    );
    assert_eq!(
        k.req("DELETE", &format!("/v1/images/{}", kimg.id), None)
            .status,
        204
    );
    assert_eq!(k.req("DELETE", "/v1/images/d1", None).status, 204);
    assert!(!std::path::Path::new(path).exists());
    assert_eq!(
        k.json("GET", "/v1/images", None)["images"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
}

#[test]
fn each_resource_is_refused_with_its_numbers() {
    // capacity: vcpus (2-0)*1.5 = 3, ram 2560-512 = 2048, disk 10.
    let k = Kilnd::start(&small_host(2, 1.5, 2560, 10));
    kernel_image(&k, "kern");
    let h: HostInfo = k.req("GET", "/v1/host", None).json().unwrap();
    assert_eq!(
        (h.vcpus.capacity, h.ram_mb.capacity, h.disk_gb.capacity),
        (3, 2048, 10)
    );
    let flavor = |n: &str, v: u32, r: u64, d: u64| {
        k.json(
            "POST",
            "/v1/flavors",
            Some(&format!(
                r#"{{"name":"{n}","vcpus":{v},"ram_mb":{r},"disk_gb":{d}}}"#
            )),
        );
    };
    flavor("cpu4", 4, 1, 0);
    flavor("ram", 1, 2049, 0);
    flavor("disk", 1, 1, 11);
    flavor("two", 2, 1024, 5);
    for (f, msg) in [
        ("cpu4", "not enough vcpus: requested 4, free 3"),
        ("ram", "not enough ram_mb: requested 2049, free 2048"),
        ("disk", "not enough disk_gb: requested 11, free 10"),
    ] {
        let r = create(&k, "s", f, "kern");
        assert_eq!(r.status, 409);
        assert!(r.text().contains(msg), "{f}: {}", r.text());
    }
    assert_eq!(create(&k, "a", "two", "kern").status, 202);
    let r = create(&k, "b", "two", "kern");
    assert_eq!(r.status, 409);
    assert!(
        r.text().contains("not enough vcpus: requested 2, free 1"),
        "{}",
        r.text()
    );
    let h: HostInfo = k.req("GET", "/v1/host", None).json().unwrap();
    assert_eq!(
        (h.vcpus.used, h.ram_mb.used, h.disk_gb.used, h.servers),
        (2, 1024, 5, 1)
    );
    assert_eq!((h.vcpus.free, h.ram_mb.free, h.disk_gb.free), (1, 1024, 5));
}

#[test]
fn fifty_concurrent_creates_never_overcommit() {
    // capacity: 3 vCPUs x 2.0 = 6.
    let k = Kilnd::start(&small_host(3, 2.0, 100_000, 1000));
    kernel_image(&k, "kern");
    let k = std::sync::Arc::new(k);
    let threads: Vec<_> = (0..50)
        .map(|i| {
            let k = k.clone();
            std::thread::spawn(move || {
                let r = create(&k, &format!("s{i}"), "k1.probe", "kern");
                (r.status, r.text())
            })
        })
        .collect();
    let results: Vec<(u16, String)> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let ok = results.iter().filter(|r| r.0 == 202).count();
    let refused: Vec<_> = results.iter().filter(|r| r.0 == 409).collect();
    assert_eq!(ok, 6, "{results:?}");
    assert_eq!(refused.len(), 44);
    assert!(
        refused
            .iter()
            .all(|r| r.1.contains("not enough vcpus: requested 1, free 0")),
        "{refused:?}"
    );
    let h: HostInfo = k.req("GET", "/v1/host", None).json().unwrap();
    assert_eq!((h.vcpus.used, h.servers), (6, 6));
    let l: ServerList = k.req("GET", "/v1/servers", None).json().unwrap();
    assert_eq!(l.servers.len(), 6);
    // ERROR (no VMM) still holds the allocation; deleting frees it.
    for s in &l.servers {
        k.wait_status(&s.id, ServerStatus::Error, Duration::from_secs(10));
    }
    assert_eq!(create(&k, "more", "k1.probe", "kern").status, 409);
    for s in &l.servers {
        k.delete_server(&s.id);
    }
    let h: HostInfo = k.req("GET", "/v1/host", None).json().unwrap();
    assert_eq!((h.vcpus.used, h.servers), (0, 0));
    let deleted: ServerList = k
        .req("GET", "/v1/servers?status=DELETED", None)
        .json()
        .unwrap();
    assert_eq!(deleted.servers.len(), 6);
    assert_eq!(
        std::fs::read_dir(k.state_path("servers")).unwrap().count(),
        0
    );
}

/// A disk image imports in the background: `importing` with progress,
/// unusable and undeletable until done; an import cut by kill -9 of kilnd
/// ends in `error` after the restart, its partial copy removed.
#[test]
fn disk_import_in_the_background() {
    let mut k = Kilnd::start(NO_VMM);
    kernel_image(&k, "kern");
    let src = k.dir.path().join("big.raw");
    std::fs::write(&src, vec![0x5au8; 128 << 20]).unwrap();
    let body = format!(
        r#"{{"type":"disk","name":"big","path":"{}","format":"raw"}}"#,
        src.display()
    );
    let r = k.req("POST", "/v1/images", Some(&body));
    assert_eq!(r.status, 202, "{}", r.text());
    let img: kiln_api::compute::Image = r.json().unwrap();
    let r = k.req("DELETE", "/v1/images/big", None);
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(r.text().contains("still importing"));
    let r = k.req(
        "POST",
        "/v1/servers",
        Some(r#"{"name":"s","flavor":"m1.small","image":"kern","disk_image":"big"}"#),
    );
    assert_eq!(r.status, 409, "{}", r.text());
    k.kill9();
    k.spawn();
    let after: kiln_api::compute::Image = k.req("GET", "/v1/images/big", None).json().unwrap();
    assert_eq!(
        after.status,
        kiln_api::compute::ImageStatus::Error,
        "{after:?}"
    );
    assert!(after.fault.unwrap().contains("interrupted"));
    let (path, _, _) = disk_of(&img);
    assert!(!std::path::Path::new(path).exists(), "partial copy left");
    assert_eq!(k.req("DELETE", "/v1/images/big", None).status, 204);
    // Imported in full this time.
    let t0 = std::time::Instant::now();
    let done = k.import_disk("big", &src, "raw");
    eprintln!("128 MiB import: {:?}", t0.elapsed());
    let (_, size_bytes, sha256) = disk_of(&done);
    assert_eq!(size_bytes, 128 << 20);
    assert_eq!(sha256, sha256sum(&src));
}
