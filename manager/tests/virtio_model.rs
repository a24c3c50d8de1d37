//! `virtio_model` (an image property that servers inherit and may
//! override at create) end to end, with real kilnd and kiln-vmm:
//!
//! - A kernel image of the `virtio_legacy` probe guest, registered
//!   `transitional`, with a root disk and a NIC (kilnd inside a network
//!   namespace the test creates): the guest finds its disk by the legacy ID
//!   1af4:1001 and drives it through the legacy I/O BAR, and the VMM
//!   presents the disk and the NIC as transitional. The same image with
//!   `virtio_model: modern` at create: the guest finds no such disk.
//! - A disk image (the MBR probe, booted by SeaBIOS) registered
//!   `transitional`: its server boots from a transitional virtio-blk.
//! - The CLI flags, and bad values refused.

mod common;

use std::path::Path;

use common::firmware::start_fw_kilnd;
use common::vm::*;
use kiln_api::compute::{Image, Server, ServerStatus, VirtioModel};
use kiln_api::vm::VmConfig;
use kiln_tests::disk::mbr_disk;
use kiln_tests::netns::{ip, NetNs};

fn vm_json(k: &common::Kilnd, id: &str) -> VmConfig {
    let b = std::fs::read(k.state_path(&format!("servers/{id}/vm.json"))).unwrap();
    serde_json::from_slice(&b).unwrap()
}

fn vmm_log(k: &common::Kilnd, id: &str) -> String {
    std::fs::read_to_string(k.state_path(&format!("servers/{id}/vmm.log"))).unwrap_or_default()
}

/// Every virtio device in the config is transitional (`true`) or none is.
fn assert_devices(cfg: &VmConfig, transitional: bool) {
    assert!(!cfg.disks.is_empty() || !cfg.nets.is_empty());
    for d in &cfg.disks {
        assert_eq!(d.transitional, transitional, "{cfg:?}");
    }
    for n in &cfg.nets {
        assert_eq!(n.transitional, transitional, "{cfg:?}");
    }
}

/// Registers the kernel image `name` of probe `probe` with `extra` JSON
/// members.
fn kernel_image(k: &common::Kilnd, name: &str, probe: &str, extra: &str) -> Image {
    let body = format!(
        r#"{{"type":"kernel","name":"{name}","kernel":"{}"{extra}}}"#,
        common::probe(probe).display()
    );
    let r = k.req("POST", "/v1/images", Some(&body));
    assert_eq!(r.status, 201, "{}", r.text());
    r.json().unwrap()
}

/// A blank 8 MiB raw disk image, imported.
fn blank_disk(k: &common::Kilnd, name: &str) -> Image {
    let path = k.dir.path().join(format!("{name}.raw"));
    std::fs::write(&path, vec![0u8; 8 << 20]).unwrap();
    k.import_disk(name, Path::new(&path), "raw")
}

#[test]
fn a_transitional_image_gives_its_servers_transitional_devices() {
    let ns = NetNs::with_peer("kvirt");
    let k = start_kilnd_in(Some(ns.name()), "");
    let r = k.req(
        "POST",
        "/v1/networks",
        Some(r#"{"name":"lan","bridge":"kbv0"}"#),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    ip(ns.name(), &["link", "set", "veth0", "master", "kbv0", "up"]);
    let img = kernel_image(
        &k,
        "legacy",
        "virtio_legacy",
        r#","virtio_model":"transitional""#,
    );
    assert_eq!(img.virtio_model, VirtioModel::Transitional);
    assert_eq!(k.image("legacy").virtio_model, VirtioModel::Transitional);
    blank_disk(&k, "blank");
    let create = |name: &str, extra: &str| -> Server {
        k.create_server(&format!(
            r#"{{"name":"{name}","flavor":"k1.probe","image":"legacy","disk_image":"blank",
                 "networks":[{{"network":"lan"}}]{extra}}}"#
        ))
    };

    // Inherited from the image: the old driver finds and drives its disk.
    let t = create("t", "");
    assert_eq!(t.virtio_model, VirtioModel::Transitional);
    wait_until("the probe's run", T, || {
        console(&k, &t.id).contains("virtio-legacy: done") || console(&k, &t.id).contains("FAIL")
    });
    let s = k.wait_status(&t.id, ServerStatus::Shutoff, T);
    assert!(s.fault.is_none(), "{:?}", s.fault);
    let out = console(&k, &t.id);
    for line in [
        "virtio-legacy: wrote sector 1",
        "virtio-legacy: read back and verified 512 bytes",
        "virtio-legacy: done",
    ] {
        assert!(out.contains(line), "{line:?} missing:\n{out}");
    }
    assert!(!out.contains("FAIL"), "{out}");
    assert_devices(&vm_json(&k, &t.id), true);
    let log = vmm_log(&k, &t.id);
    // virtio types: 2 block, 1 net.
    for dev in [
        "virtio type 2 is transitional",
        "virtio type 1 is transitional",
    ] {
        assert!(log.contains(dev), "{dev:?} missing:\n{log}");
    }
    assert_eq!(k.server(&t.id).virtio_model, VirtioModel::Transitional);

    // Overridden at create: modern devices only, which that driver does
    // not know.
    let m = create("m", r#","virtio_model":"modern""#);
    assert_eq!(m.virtio_model, VirtioModel::Modern);
    wait_until("the probe's run", T, || {
        console(&k, &m.id).contains("virtio-legacy: FAIL")
    });
    k.wait_status(&m.id, ServerStatus::Shutoff, T);
    assert!(
        console(&k, &m.id).contains("virtio-legacy: FAIL no transitional virtio-blk (1af4:1001)"),
        "{}",
        console(&k, &m.id)
    );
    assert_devices(&vm_json(&k, &m.id), false);
    assert!(!vmm_log(&k, &m.id).contains("is transitional"));

    // Bad values: refused, nothing recorded.
    for (path, body) in [
        (
            "/v1/servers",
            r#"{"name":"x","flavor":"k1.probe","image":"legacy","virtio_model":"legacy"}"#
                .to_string(),
        ),
        (
            "/v1/images",
            format!(
                r#"{{"type":"kernel","name":"y","kernel":"{}","virtio_model":"old"}}"#,
                common::probe("hello").display()
            ),
        ),
    ] {
        let r = k.req("POST", path, Some(&body));
        assert_eq!(r.status, 400, "{body}: {}", r.text());
        assert!(r.text().contains("unknown variant"), "{}", r.text());
    }
    for id in [&t.id, &m.id] {
        k.delete_server(id);
    }
    assert_eq!(k.req("GET", "/v1/images/y", None).status, 404);
    assert_nothing_left(&k);
}

/// A disk image registered `transitional` (Nova's `hw_machine_type=pc`
/// case: an old Windows golden image): SeaBIOS boots its server's root
/// disk, a transitional virtio-blk, and the guest's boot sector runs.
#[test]
fn a_transitional_disk_image_boots_through_seabios() {
    let k = start_fw_kilnd();
    let disk = mbr_disk(k.dir.path());
    let img = k.import_disk_with(
        "old-win",
        &disk,
        "raw",
        r#","firmware":"bios","virtio_model":"transitional""#,
    );
    assert_eq!(img.virtio_model, VirtioModel::Transitional);
    let s = k.create_server(r#"{"name":"w","flavor":"fw.small","image":"old-win"}"#);
    assert_eq!(s.virtio_model, VirtioModel::Transitional);
    wait_until(
        "the boot sector's line",
        std::time::Duration::from_secs(180),
        || console(&k, &s.id).contains("kiln MBR booted from virtio-blk"),
    );
    k.wait_status(&s.id, ServerStatus::Shutoff, T);
    assert_devices(&vm_json(&k, &s.id), true);
    assert!(
        vmm_log(&k, &s.id).contains("virtio type 2 is transitional"),
        "{}",
        vmm_log(&k, &s.id)
    );
    k.delete_server(&s.id);
    assert_nothing_left(&k);
}

#[test]
fn cli_sets_and_shows_the_virtio_model() {
    let k = start_kilnd("");
    let hello = common::probe("hello");
    let (ok, out, err) = k.cli(&[
        "image",
        "kernel",
        "old",
        "--kernel",
        hello.to_str().unwrap(),
        "--cmdline",
        "hold",
        "--virtio-model",
        "transitional",
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("virtio:transitional"), "{out}");
    let (ok, _, err) = k.cli(&[
        "image",
        "kernel",
        "bad",
        "--kernel",
        hello.to_str().unwrap(),
        "--virtio-model",
        "legacy",
    ]);
    assert!(!ok && err.contains("legacy"), "{err}");
    let disk = k.dir.path().join("d.raw");
    std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
    let (ok, out, err) = k.cli(&[
        "--json",
        "image",
        "import",
        "d",
        "--path",
        disk.to_str().unwrap(),
        "--format",
        "raw",
        "--virtio-model",
        "transitional",
    ]);
    assert!(ok, "{err}");
    let img: Image = serde_json::from_str(&out).unwrap();
    assert_eq!(img.virtio_model, VirtioModel::Transitional);

    // Inherited, shown; overridden at create.
    let (ok, out, err) = k.cli(&[
        "--json", "server", "create", "a", "--flavor", "k1.probe", "--image", "old", "--wait",
        "active",
    ]);
    assert!(ok, "{err}");
    let a: Server = serde_json::from_str(&out).unwrap();
    assert_eq!(a.virtio_model, VirtioModel::Transitional);
    let (ok, out, _) = k.cli(&["server", "show", "a"]);
    assert!(ok && out.contains("virtio_model: transitional"), "{out}");
    let (ok, out, err) = k.cli(&[
        "--json",
        "server",
        "create",
        "b",
        "--flavor",
        "k1.probe",
        "--image",
        "old",
        "--virtio-model",
        "modern",
    ]);
    assert!(ok, "{err}");
    let b: Server = serde_json::from_str(&out).unwrap();
    assert_eq!(b.virtio_model, VirtioModel::Modern);
    let (ok, out, _) = k.cli(&["server", "show", "b"]);
    assert!(ok && !out.contains("virtio_model"), "{out}");
    for s in ["a", "b"] {
        let (ok, _, err) = k.cli(&["server", "delete", s]);
        assert!(ok, "{err}");
    }
    assert_nothing_left(&k);
}
